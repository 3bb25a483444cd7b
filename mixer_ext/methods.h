/* methods: final answers to the requests the node does not serve (see methods.c). */
#ifndef SIPCONF_METHODS_H
#define SIPCONF_METHODS_H
enum methods_reason {
    METHODS_NOT_ALLOWED,  /* 405: REGISTER, SUBSCRIBE, PUBLISH, MESSAGE, REFER, NOTIFY */
    METHODS_UNKNOWN,      /* 501: a method SIP does not define */
    METHODS_EVENT,        /* 489: an in-dialog SUBSCRIBE/NOTIFY (no event packages here) */
    METHODS_INFO_BODY,    /* 415: an INFO body the node does not read */
    METHODS_NO_DIALOG,    /* 481: INFO/UPDATE/PRACK outside a dialog */
    METHODS_REASONS
};
int methods_install(void);
unsigned long methods_refused(int why);
#endif
