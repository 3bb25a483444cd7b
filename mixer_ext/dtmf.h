/* In-band DTMF detection: Goertzel filters on each 20 ms frame of a leg's decoded audio.
 *
 * A frame is a candidate digit when one row and one column tone stand out: enough energy,
 * the two tones hold most of the frame's energy (speech and music spread theirs), each tone is
 * well above the others of its group, and the twist between them is within 8 dB. A digit is
 * reported once it has been seen in two frames in a row (40 ms) and is released after two
 * frames without it. No allocation, no locks: one detector per leg, called from the tick.
 */
#ifndef SIPCONF_DTMF_H
#define SIPCONF_DTMF_H

#include <stdint.h>

typedef struct dtmf_detector {
    int rate;
    float coef[8];
    char current;   /* digit seen in the last frame, 0 if none */
    int hits;       /* consecutive frames with `current` */
    int misses;     /* consecutive frames without the reported digit */
    char reported;  /* digit reported and not yet released, 0 if none */
} dtmf_detector;

void dtmf_init(dtmf_detector *d, int rate);
/* Feed one frame; returns a newly pressed digit ('0'-'9', '*', '#', 'A'-'D') or 0. */
char dtmf_feed(dtmf_detector *d, const int16_t *pcm, int n);
/* The frame's candidate digit (no duration logic), for tests. */
char dtmf_frame_digit(const dtmf_detector *d, const int16_t *pcm, int n);
/* n samples of the DTMF tone pair for digit at rate (amplitude per tone), 0 if no digit. */
int dtmf_tone(char digit, int rate, int16_t *out, int n, int amplitude);

#endif
