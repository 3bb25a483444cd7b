/* floor: see floor.h. */
#include "floor.h"

#include <math.h>

#define FLOOR_ON_DB 40.0f       /* mean square in dB re 1 LSB^2: about -50 dBFS */
#define FLOOR_OFF_DB 32.0f
#define FLOOR_ALPHA 0.2f        /* per 20 ms frame: about 100 ms to follow a change */
#define TAKE_FREE_FRAMES 5      /* 100 ms */
#define TAKE_BUSY_FRAMES 25     /* 500 ms */
#define TAKE_BUSY_DB 6.0f

void floor_init(floor_state *f)
{
    f->holder = 0;
    f->candidate = 0;
    f->candidate_frames = 0;
}

void floor_forget(floor_state *f, mix_leg *leg)
{
    if (f->holder == leg)
        f->holder = 0;
    if (f->candidate == leg) {
        f->candidate = 0;
        f->candidate_frames = 0;
    }
    leg->talk_score = 0.0f;
    leg->talking = 0;
}

int floor_update(floor_state *f, mix_room *room)
{
    mix_leg *loudest = 0;
    for (int i = 0; i < room->nlegs; i++) {
        mix_leg *leg = room->legs[i];
        if (leg->flags & MIX_LEG_SOURCE)
            continue;
        float level = 10.0f * log10f((float)leg->energy / (float)leg->spf + 1.0f);
        leg->talk_score += FLOOR_ALPHA * (level - leg->talk_score);
        if (leg->talking)
            leg->talking = leg->talk_score >= FLOOR_OFF_DB;
        else
            leg->talking = leg->talk_score >= FLOOR_ON_DB;
        if (leg->talking && (!loudest || leg->talk_score > loudest->talk_score))
            loudest = leg;
    }
    if (!loudest || loudest == f->holder) {
        f->candidate = 0;
        f->candidate_frames = 0;
        return 0;
    }
    int busy = f->holder && f->holder->talking;
    if (busy && loudest->talk_score < f->holder->talk_score + TAKE_BUSY_DB) {
        f->candidate = 0;
        f->candidate_frames = 0;
        return 0;
    }
    if (loudest != f->candidate) {
        f->candidate = loudest;
        f->candidate_frames = 0;
    }
    if (++f->candidate_frames < (busy ? TAKE_BUSY_FRAMES : TAKE_FREE_FRAMES))
        return 0;
    f->holder = loudest;
    f->candidate = 0;
    f->candidate_frames = 0;
    return 1;
}
