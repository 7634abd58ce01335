"""The mixer process's claims on the system: its memory locked, its mixing or ring-writing thread
real-time just below the thread JACK runs the callback in, and finding that thread. Each says in
one line what it could not get; the mixer plays on regardless."""

from __future__ import annotations

import os

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4  # <sys/mman.h> on Linux (MCL_ONFAULT: 4.4 and later)


def lock_memory() -> str | None:
    """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) where the memlock limit allows it: a page
    the callback or the mixing thread has touched is never paged out again, so no page fault stalls
    them (ONFAULT: pages never touched, as OpenBLAS's 32 MB buffer, stay unmapped instead of
    resident). None when locked, else the one line saying why not (a Pi's default limit is 8 MB:
    the user joins the audio group, see docs/raspberry-pi.md). ``DRUMMACHINE_MIXER_MLOCK=0`` leaves
    it unlocked (a SIGKILLed mixer then leaves the JACK graph ~1.7 ms sooner: the kernel unmaps a dying
    process's memory before closing its JACK socket; benchmarks/jack_kill.py)."""
    import ctypes
    import resource

    if os.environ.get("DRUMMACHINE_MIXER_MLOCK") == "0":
        return "memory not locked: DRUMMACHINE_MIXER_MLOCK=0"
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        # a limit that fits today's pages would fail tomorrow's allocations under MCL_FUTURE
        return (f"memory not locked: the memlock limit is {soft // 1024} kB (allow 'memlock unlimited' "
                f"for the audio group in /etc/security/limits.d/ and join the group)")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 and libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
            return f"memory not locked: mlockall failed ({os.strerror(ctypes.get_errno())})"
    except (OSError, AttributeError) as exc:
        return f"memory not locked: no mlockall here ({exc})"
    return None


def realtime_below(thread_id: int, callback_thread: int) -> str | None:
    """SCHED_FIFO for the mixing thread one step below the callback's priority (JACK gives the
    callback its own), so it runs as soon as a callback wakes it and never delays one; without
    the right, nice -10, and without that the thread runs as it is. None, or the one line why not."""
    try:
        callback_priority = os.sched_getparam(callback_thread).sched_priority if callback_thread else 0
        if os.sched_getscheduler(callback_thread) not in (os.SCHED_FIFO, os.SCHED_RR):
            callback_priority = 0
    except OSError:
        callback_priority = 0
    priority = max(1, callback_priority - 1) if callback_priority else 0
    if priority:
        try:
            os.sched_setscheduler(thread_id, os.SCHED_FIFO, os.sched_param(priority))
            return None
        except OSError as exc:
            why = f"no real-time priority for the mixing thread ({exc.strerror})"
    else:
        why = "no real-time priority for the mixing thread (the audio callback has none to stay below)"
    try:
        os.setpriority(os.PRIO_PROCESS, thread_id, -10)  # a thread's own nice value on Linux
        return why + "; it runs at nice -10"
    except OSError:
        return why + "; it runs at normal priority (allow rtprio for the audio group: docs/raspberry-pi.md)"


def jack_thread(process_id: int = 0) -> int:
    """The OS thread id of this process's highest real-time thread (JACK's, running the C
    callback), or 0 if none."""
    best, tid_best = 0, 0
    base = f"/proc/{process_id or os.getpid()}/task"
    for tid in os.listdir(base):
        try:
            fields = open(f"{base}/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rt_priority, policy = int(fields[37]), int(fields[38])  # stat fields 40 and 41
        if policy in (1, 2) and rt_priority > best:  # SCHED_FIFO, SCHED_RR
            best, tid_best = rt_priority, int(tid)
    return tid_best
