#!/usr/bin/env bash
# Prove that drummachine installs and runs on a Raspberry Pi's OS: arm64 Debian, emulated.
#
#   scripts/pi_install_check.sh [--recipe system|source|plain] [--cpu cortex-a72|cortex-a76]
#                               [--ref REF] [--extra-debs "PKG..."] [--fresh] [SUITE...]
#
# SUITE is bookworm (Debian 12, Python 3.11) or trixie (Debian 13, Python 3.13); default: both.
# For each suite it starts from a clean arm64 minbase root filesystem (debootstrapped once and kept
# as a tarball under $DRUMMACHINE_PI_CACHE, default /var/tmp/drummachine-pi/SUITE), installs what
# docs/raspberry-pi.md tells a musician to install, pip-installs a wheel of this repository
# (dependencies from the registry) into a venv at /opt/drummachine, and runs, under qemu with a
# Raspberry Pi CPU: drummachine --version, drummachine generate, drummachine info, import rtmidi,
# import sounddevice. One PASS/FAIL line per suite; the exit status is non-zero if any failed.
# The wheel is built from the working tree (tracked and untracked files that git does not ignore),
# or with --ref from a commit (git archive REF). --fresh debootstraps again instead of the cache.
# --extra-debs installs more Debian packages first, to mimic a fuller image (python3-numpy, say),
# which a --system-site-packages venv then sees.
#
# Recipes (python-rtmidi 1.5.8 has no wheel for Python 3.13 on arm64):
#   system  the venv sees Debian's python3-rtmidi (--system-site-packages) where Debian's version
#           satisfies the project's python-rtmidi>=1.5 (trixie); elsewhere pip uses its wheel.
#   source  a plain venv; apt installs a C++ compiler and the ALSA/JACK headers so pip can build
#           python-rtmidi from source where there is no wheel.
#   plain   a plain venv and nothing else: pip alone (fails on trixie; shows why the others exist).
#
# Needs root and: apt-get install qemu-user-static binfmt-support debootstrap.
# Emulation proves correctness on the ARM instruction set, not speed: timings here mean nothing
# for a real Pi. Run one check at a time (a lock enforces it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/.." && pwd))
CACHE=${DRUMMACHINE_PI_CACHE:-/var/tmp/drummachine-pi}
RECIPE=system
CPU=cortex-a72
FRESH=0
REF=
EXTRA_DEBS=
SUITES=()
VENV=/opt/drummachine

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "pi_install_check: $*" >&2; exit 2; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --recipe) RECIPE=${2:?}; shift 2 ;;
        --cpu) CPU=${2:?}; shift 2 ;;
        --ref) REF=${2:?}; shift 2 ;;
        --extra-debs) EXTRA_DEBS=${2:?}; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        -h|--help) usage ;;
        bookworm|trixie) SUITES+=("$1"); shift ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bookworm trixie)
case $RECIPE in system|source|plain) ;; *) die "--recipe is system, source or plain" ;; esac
case $CPU in  # what /proc/cpuinfo says on the Pi
    cortex-a72) CPU_PART=0xd08 CPU_VARIANT=0x0 CPU_REVISION=3  # Pi 4 (BCM2711)
                FEATURES="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) CPU_PART=0xd0b CPU_VARIANT=0x4 CPU_REVISION=1  # Pi 5 (BCM2712)
                FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid"
                FEATURES+=" asimdrdm lrcpc dcpop asimddp" ;;
    *) die "--cpu is cortex-a72 or cortex-a76" ;;
esac
LABEL="recipe $RECIPE${EXTRA_DEBS:+ + $EXTRA_DEBS}, $CPU"

# ---- the host: root, tools, the arm64 binfmt handler, one check at a time ---------------------
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mount need it)"
for tool in debootstrap qemu-aarch64-static update-binfmts findmnt; do
    command -v "$tool" >/dev/null ||
        die "$tool is missing: apt-get install -y qemu-user-static binfmt-support debootstrap"
done
BINFMT=/proc/sys/fs/binfmt_misc
if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
    mountpoint -q "$BINFMT" || mount -t binfmt_misc binfmt_misc "$BINFMT"
    update-binfmts --enable qemu-aarch64
fi
grep -qx enabled "$BINFMT/qemu-aarch64" || die "cannot enable the qemu-aarch64 binfmt handler"
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock -n 9 || die "another pi_install_check is running (lock $CACHE/lock)"

# The Debian archive this host's apt already uses (and its security archive, if any).
host_uris() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do  # deb [options] URI suite ...
        [ -f "$f" ] && sed -n -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && sed -n 's/^URIs:[[:space:]]*//p' "$f" | tr -s ' \t' '\n'
    done
    return 0
}
MIRROR=${DEBIAN_MIRROR:-$(host_uris | grep -E '/debian/?$' | head -n1 || true)}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(host_uris | grep -E '/debian-security/?$' | head -n1 || true)}
[ -n "$MIRROR" ] || die "no Debian archive in this host's apt sources; set DEBIAN_MIRROR"
MIRROR=${MIRROR%/} SECURITY=${SECURITY%/}

# ---- mounts: tracked, always undone, and nothing is deleted while anything is mounted in it ----
MOUNTS=()
mnt() { mount "$@"; MOUNTS+=("${!#}"); }
unmount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" ||
            echo "pi_install_check: could not unmount ${MOUNTS[i]}" >&2
    done
    MOUNTS=()
}
mounted_under() { findmnt -rn -o TARGET | awk -v d="$1" '$0 == d || index($0, d "/") == 1'; }
safe_rm() {
    [ -e "$1" ] || return 0
    if [ -n "$(mounted_under "$1")" ]; then
        die "refusing to delete $1: still mounted there: $(mounted_under "$1" | tr '\n' ' ')"
    fi
    rm -rf --one-file-system "$1"
}

# An ARM /proc/cpuinfo: qemu-user shows the host's x86 one, which crashes onnxruntime's CPU probe.
CPUINFO=$CACHE/cpuinfo-$CPU
for ((i = 0; i < $(nproc); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$FEATURES"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
        "$CPU_VARIANT" "$CPU_PART" "$CPU_REVISION"
done > "$CPUINFO"

enter() {  # enter ROOTFS SUITE: mount what a chroot needs
    local r=$1 suite=$2
    mnt -t proc proc "$r/proc"
    mnt --bind "$CPUINFO" "$r/proc/cpuinfo"
    mnt -t sysfs -o ro sysfs "$r/sys"
    mnt --bind /dev "$r/dev"
    mkdir -p "$CACHE/$suite/apt-archives/partial" "$r/var/cache/apt/archives"
    mnt --bind "$CACHE/$suite/apt-archives" "$r/var/cache/apt/archives"
    cp -L /etc/resolv.conf "$r/etc/resolv.conf"
}
# Run in the chroot with a clean environment (no host pip settings) and the Pi's CPU.
run_in() {
    local r=$1; shift
    env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive QEMU_CPU="$CPU" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/chroot "$r" "$@"
}
APT_INSTALL=(apt-get install -y -q --no-install-recommends -o Acquire::Retries=3)

# ---- the base root filesystem: debootstrap + python3 + python3-venv, cached as a tarball -------
make_base() {  # make_base SUITE LOG
    local suite=$1 log=$2 boot=$CACHE/$1/bootstrap tar=$CACHE/$1/base.tar
    if [ "$FRESH" = 0 ] && [ -s "$tar" ]; then say "$suite: base root filesystem cached ($tar)"; return; fi
    say "$suite: debootstrap arm64 minbase from $MIRROR (minutes)"
    safe_rm "$boot"
    debootstrap --arch=arm64 --variant=minbase "$suite" "$boot" "$MIRROR" >>"$log" 2>&1
    {
        echo "deb $MIRROR $suite main"
        echo "deb $MIRROR $suite-updates main"
        [ -z "$SECURITY" ] || echo "deb $SECURITY $suite-security main"
    } > "$boot/etc/apt/sources.list"
    enter "$boot" "$suite"
    # The host's extra CA certificates (a proxy's), or HTTPS to the registry fails in the chroot.
    local cas=/usr/local/share/ca-certificates
    mkdir -p "$boot$cas"
    cp "$cas"/*.crt "$boot$cas/" 2>/dev/null || true
    {
        run_in "$boot" apt-get update -q
        run_in "$boot" "${APT_INSTALL[@]}" python3 python3-venv ca-certificates
        run_in "$boot" update-ca-certificates
    } >>"$log" 2>&1
    unmount_all
    rm -f "$boot"/var/cache/apt/archives/*.deb  # debootstrap's; not needed in the tarball
    tar -C "$boot" -cf "$tar.part" . && mv "$tar.part" "$tar"
    safe_rm "$boot"
}

# ---- the wheel, built once on the host from this repository's working tree ---------------------
WHEELS=$(mktemp -d)
SRC=$(mktemp -d)
trap 'unmount_all; rm -rf "$WHEELS" "$SRC"' EXIT
trap 'exit 130' INT TERM
say "building the drummachine wheel from $REPO${REF:+ at $REF}"
# Build from a copy so no build/ lands in the repository.
if [ -n "$REF" ]; then
    git -C "$REPO" archive --format=tar "$REF" | tar -xf - -C "$SRC"
elif git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z -co --exclude-standard |
        tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$SRC"
else
    cp -a "$REPO/." "$SRC/"
fi
# pure Python (docs/raspberry-pi.md): a wheel built here would carry an x86-64 JACK MIDI library
DRUMMACHINE_PURE_WHEEL=1 python3 -m pip wheel -q --no-deps -w "$WHEELS" "$SRC" >"$WHEELS/build.log" 2>&1 ||
    { cat "$WHEELS/build.log" >&2; die "pip wheel failed"; }
WHEEL=$(ls "$WHEELS"/drummachine-*.whl)
say "wheel: $(basename "$WHEEL")"

# ---- one suite, in a subshell so its mounts are undone however it ends -------------------------
begin() { step=$1; echo "==== $step (at $((SECONDS - t0)) s)" >>"$log"; }  # a timed step in the log
check_suite() {
    # Not local: the EXIT trap reads suite, log, step and t0.
    suite=$1 dir=$CACHE/$1 root=$CACHE/$1/rootfs log=$CACHE/$1/check.log t0=$SECONDS step=start
    local t1 t2 pkgs venv_opts=()
    mkdir -p "$dir"; : >"$log"
    # The trap writes to fds 3 and 4: a signal can end the subshell inside a step sent to the log.
    exec 3>&1 4>&2
    trap 'rc=$?; unmount_all 2>&4
          if [ $rc != 0 ]; then
              { echo "---- last lines of $log ----"; tail -n 25 "$log"; } >&4
              echo >&3 "FAIL $suite ($LABEL): step \"$step\" failed after $((SECONDS - t0)) s;" \
                       "log: $log"
          fi' EXIT
    trap 'exit 130' INT TERM
    begin debootstrap; make_base "$suite" "$log"
    t1=$SECONDS
    begin "fresh root filesystem"
    safe_rm "$root"; mkdir -p "$root"; tar -C "$root" -xf "$dir/base.tar"
    enter "$root" "$suite"
    begin "apt-get update"; run_in "$root" apt-get update -q >>"$log" 2>&1

    # What the musician installs with apt: docs/raspberry-pi.md.
    local deb_rtmidi
    deb_rtmidi=$(run_in "$root" apt-cache policy python3-rtmidi | sed -n 's/^ *Candidate: *//p')
    echo "Debian's python3-rtmidi for $suite: ${deb_rtmidi:-none}" >>"$log"
    pkgs=(libportaudio2 libspeexdsp1)  # sounddevice's PortAudio; the listener's own-kit canceller; pip installs neither
    if [ "$RECIPE" = system ] && [ "${deb_rtmidi:-(none)}" != "(none)" ] &&
            dpkg --compare-versions "$deb_rtmidi" ge 1.5; then
        pkgs+=(python3-rtmidi); venv_opts=(--system-site-packages)
    elif [ "$RECIPE" = source ]; then
        pkgs+=(g++ pkg-config python3-dev libasound2-dev libjack-jackd2-dev)
    fi
    # shellcheck disable=SC2206  # a list of package names, split on purpose
    pkgs+=($EXTRA_DEBS)
    begin "apt-get install ${pkgs[*]}"
    run_in "$root" "${APT_INSTALL[@]}" "${pkgs[@]}" >>"$log" 2>&1

    begin "python3 -m venv ${venv_opts[*]:+${venv_opts[*]} }$VENV"
    run_in "$root" python3 -m venv "${venv_opts[@]}" "$VENV" >>"$log" 2>&1
    run_in "$root" ln -sf "$VENV/bin/drummachine" /usr/local/bin/drummachine  # as deploy/ expects
    mkdir -p "$root/tmp/wheels"; cp "$WHEEL" "$root/tmp/wheels/"
    begin "pip install $(basename "$WHEEL")"
    run_in "$root" "$VENV/bin/pip" install "/tmp/wheels/$(basename "$WHEEL")" >>"$log" 2>&1
    t2=$SECONDS

    local py=$VENV/bin/python
    begin "import rtmidi"
    run_in "$root" "$py" -c 'import rtmidi; print(rtmidi.get_compiled_api())' >>"$log" 2>&1
    begin "import sounddevice"
    run_in "$root" "$py" -c 'import sounddevice as sd; print(sd.get_portaudio_version()[1])' >>"$log" 2>&1
    begin "drummachine --version"; run_in "$root" drummachine --version >>"$log" 2>&1
    begin "drummachine generate"
    run_in "$root" drummachine generate --style rock --bpm 120 --bars 4 -o /tmp/x.mid >>"$log" 2>&1
    begin "drummachine info"; run_in "$root" drummachine info /tmp/x.mid --bars 1 >>"$log" 2>&1

    begin "report"
    local versions apis groove
    versions=$(run_in "$root" "$py" -c '
import importlib.metadata as m, sys, rtmidi
where = "Debian package" if rtmidi.__file__.startswith("/usr/lib/") else "in the venv"
v = {name: m.version(name) for name in ("python-rtmidi", "onnxruntime", "numpy")}
print("Python %s, python-rtmidi %s (%s), onnxruntime %s, numpy %s" % (
    sys.version.split()[0], v["python-rtmidi"], where, v["onnxruntime"], v["numpy"]))')
    apis=$(run_in "$root" "$py" -c '
import rtmidi
print("+".join(rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()))')
    groove=$(sha256sum "$root/tmp/x.mid" | cut -c1-12)  # the same bytes on x86 mean the same groove
    echo "PASS $suite ($LABEL): $versions, rtmidi APIs $apis," \
         "groove sha256 $groove;" \
         "base $((t1 - t0)) s, apt+venv+pip $((t2 - t1)) s, checks $((SECONDS - t2)) s"
}

status=0
for suite in "${SUITES[@]}"; do
    set +e
    (set -e; check_suite "$suite")
    rc=$?
    set -e
    [ $rc = 0 ] || status=1
    [ $rc != 130 ] || exit 130
done
exit $status
