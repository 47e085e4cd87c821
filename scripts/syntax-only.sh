#!/bin/sh
# A compiler launcher (CMAKE_CXX_COMPILER_LAUNCHER) that only checks a
# source: it runs the compile command with -fsyntax-only and leaves an empty
# object file for the build tool. scripts/test.sh uses it to compile every
# source on its own, which the unity builds do not.
out=
prev=
for arg in "$@"; do
  [ "$prev" = "-o" ] && out=$arg
  prev=$arg
done
"$@" -fsyntax-only && : >"$out"
