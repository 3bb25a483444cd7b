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

extensions = [
    Extension(
        "mixer_ext.mixer",
        ["mixer_ext/mixer.pyx", "mixer_ext/mixcore.c", "mixer_ext/dtmf.c",
         "mixer_ext/floor.c"],
        include_dirs=["mixer_ext", numpy.get_include()],
        extra_compile_args=COPTS,
    ),
]
if os.environ.get("SIPCONF_MIXER_ONLY") != "1":
    pj = pj_flags()
    pj["include_dirs"] = pj["include_dirs"] + ["mixer_ext"]
    extensions += [
        Extension(
            "mixer_ext.streams",
            ["mixer_ext/streams.pyx", "mixer_ext/engine.c", "mixer_ext/mixcore.c",
             "mixer_ext/dtmf.c", "mixer_ext/floor.c"],
            extra_compile_args=COPTS,
            **pj,
        ),
        Extension(
            "mixer_ext.sipguard",
            ["mixer_ext/sipguard.pyx", "mixer_ext/badsip.c", "mixer_ext/dtmfinfo.c"],
            extra_compile_args=COPTS,
            **pj,
        ),
        # pjlib's log lines into a lock-free ring (its one copy: only this module links it).
        Extension(
            "mixer_ext.logring",
            ["mixer_ext/logring.pyx", "mixer_ext/pjlog.c"],
            extra_compile_args=COPTS,
            **pj,
        ),
    ]

setup(ext_modules=cythonize(extensions, language_level=3))
