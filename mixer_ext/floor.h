/* Who holds the floor: the loudest sustained talker of a room.
 *
 * Each leg keeps a smoothed speaking level (dB of its contribution's mean square, so muted
 * legs, which contribute nothing, never talk); a leg talks above FLOOR_ON_DB and stops below
 * FLOOR_OFF_DB (hysteresis). A talker takes a free floor, or one whose holder went quiet, after
 * 100 ms as the loudest talker; it takes the floor from a holder still talking only by being
 * 6 dB louder for 500 ms, so a cough does not steal it. Plain C, no allocation.
 */
#ifndef SIPCONF_FLOOR_H
#define SIPCONF_FLOOR_H

#include "mixcore.h"

typedef struct floor_state {
    mix_leg *holder;
    mix_leg *candidate;
    int candidate_frames;
} floor_state;

void floor_init(floor_state *f);
/* After a tick: update every leg's score; returns 1 when the holder changed. */
int floor_update(floor_state *f, mix_room *room);
/* A leg leaves the room: it no longer holds or bids for the floor. */
void floor_forget(floor_state *f, mix_leg *leg);

#endif
