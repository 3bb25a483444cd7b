"""Builds mixer_ext against the project's own pjproject (scripts/build-pjproject.sh).

pjproject's location comes from PJPROJECT_PREFIX, else <venv>/pjproject: its pkg-config file
gives the flags, and an rpath makes the extension load the same shared pjlib as pjsua2.
"""

import os
import shlex
import subprocess
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def pj_flags():
    prefix = os.environ.get("PJPROJECT_PREFIX") or os.path.join(sys.prefix, "pjproject")
    pc = os.path.join(prefix, "lib", "pkgconfig")
    if not os.path.isdir(pc):
        sys.exit(f"pjproject not found in {prefix}: run scripts/build-pjproject.sh first")
    env = dict(os.environ, PKG_CONFIG_PATH=pc)

    def pkg(*args):
        out = subprocess.check_output(["pkg-config", *args, "libpjproject"], env=env, text=True)
        return shlex.split(out)

    cflags = pkg("--cflags")
    libs = pkg("--libs")
    return {
        "include_dirs": [f[2:] for f in cflags if f.startswith("-I")],
        "define_macros": [
            tuple((f[2:].split("=", 1) + ["1"])[:2]) for f in cflags if f.startswith("-D")
        ],
        "library_dirs": [f[2:] for f in libs if f.startswith("-L")],
        "libraries": [f[2:] for f in libs if f.startswith("-l")],
        "runtime_library_dirs": [f[2:] for f in libs if f.startswith("-L")],
    }


COPTS = ["-O3", "-std=gnu11", "-fno-math-errno", "-Wno-unused-function"]

# The mixer maths (N-1 mix, DTMF, floor), used by both mixer (offline) and streams (live):
# compiled once into a static library of position-independent code (build_clib) that both
# extensions link. No pjproject in it. An extension relinks when these sources change.
MIX_SOURCES = ["mixer_ext/mixcore.c", "mixer_ext/dtmf.c", "mixer_ext/floor.c",
               "mixer_ext/transit.c"]
MIX_HEADERS = ["mixer_ext/mixcore.h", "mixer_ext/dtmf.h", "mixer_ext/floor.h",
               "mixer_ext/transit.h"]
MIX_LIB = ("sipconf_mix", {"sources": MIX_SOURCES, "include_dirs": ["mixer_ext"],
                           "obj_deps": {"": MIX_HEADERS}, "cflags": COPTS + ["-fPIC"]})
MIX_DEPENDS = MIX_SOURCES + MIX_HEADERS

# The stream driver, split by concern (engine_int.h): only streams uses it.
ENGINE_SOURCES = ["mixer_ext/clock.c", "mixer_ext/rooms.c", "mixer_ext/legs.c",
                  "mixer_ext/taps.c", "mixer_ext/events.c", "mixer_ext/pipes.c",
                  "mixer_ext/share.c", "mixer_ext/fec.c"]
ENGINE_HEADERS = ["mixer_ext/engine.h", "mixer_ext/engine_int.h", "mixer_ext/ring.h"]

extensions = [
    Extension(
        "mixer_ext.mixer",
        ["mixer_ext/mixer.pyx"],
        include_dirs=["mixer_ext", numpy.get_include()],
        libraries=["sipconf_mix"],
        depends=MIX_DEPENDS,
        extra_compile_args=COPTS,
    ),
]
if os.environ.get("SIPCONF_MIXER_ONLY") != "1":
    pj = pj_flags()
    pj["include_dirs"] = pj["include_dirs"] + ["mixer_ext"]
    extensions += [
        Extension(
            "mixer_ext.streams",
            ["mixer_ext/streams.pyx", *ENGINE_SOURCES, "mixer_ext/rtpguard.c"],
            extra_compile_args=COPTS,
            depends=MIX_DEPENDS + ENGINE_HEADERS + ["mixer_ext/rtpguard.h"],
            **dict(pj, libraries=["sipconf_mix", *pj["libraries"], "speexdsp"]),
        ),
        Extension(
            "mixer_ext.sipguard",
            ["mixer_ext/sipguard.pyx", "mixer_ext/badsip.c", "mixer_ext/dtmfinfo.c",
             "mixer_ext/methods.c", "mixer_ext/admission.c", "mixer_ext/tlsreload.c"],
            extra_compile_args=COPTS,
            depends=["mixer_ext/badsip.h", "mixer_ext/dtmfinfo.h", "mixer_ext/methods.h",
                     "mixer_ext/admission.h", "mixer_ext/tlsreload.h"],
            **pj,
        ),
        # pjlib's log lines into a lock-free ring (its one copy: only this module links it).
        Extension(
            "mixer_ext.logring",
            ["mixer_ext/logring.pyx", "mixer_ext/pjlog.c"],
            extra_compile_args=COPTS,
            depends=["mixer_ext/pjlog.h"],
            **pj,
        ),
    ]

setup(libraries=[MIX_LIB], ext_modules=cythonize(extensions, language_level=3))
