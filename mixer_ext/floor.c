/* floor: see floor.h. */
#include "floor.h"

#include <math.h>

#define FLOOR_ON_DB 40.0f       /* mean square in dB re 1 LSB^2: about -50 dBFS */
#define FLOOR_OFF_DB 32.0f
#define FLOOR_ALPHA 0.2f        /* per 20 ms frame: about 100 ms to follow a change */
#define TAKE_FREE_FRAMES 5      /* 100 ms */
#define TAKE_BUSY_FRAMES 25     /* 500 ms */
#define TAKE_BUSY_DB 6.0f
#define SPEAK_HANGOVER_FRAMES 5 /* 100 ms below FLOOR_OFF_DB ends a member's speaking */

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
    leg->speaking = 0;
    leg->quiet_frames = 0;
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
        /* speaking (talk events): starts with talking; ends after SPEAK_HANGOVER_FRAMES of
         * frames below the off threshold, not when the slow score decays into a noise floor
         * just under it (which took 260 ms from a -50 dBFS floor); it starts again only on a
         * loud frame, not on the score's slow tail */
        if (leg->speaking) {
            leg->quiet_frames = level < FLOOR_OFF_DB ? leg->quiet_frames + 1 : 0;
            if (leg->quiet_frames >= SPEAK_HANGOVER_FRAMES)
                leg->speaking = 0;
        } else if (leg->talking && level >= FLOOR_ON_DB) {  /* not the score's tail */
            leg->speaking = 1;
            leg->quiet_frames = 0;
        }
        if (leg->talking && !(leg->flags & MIX_LEG_PRIVATE)  /* a coach is not the room's */
                && (!loudest || leg->talk_score > loudest->talk_score))
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
