#!/bin/sh
# Regenerates samples/hello.wav, the caller's voice for `xswarm call` and the client tests.
# It is synthesised with espeak-ng (apt-get install espeak-ng) rather than downloaded, so it
# carries no licence question, then converted to 16-bit mono 24 kHz by our own WAV code.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-"$here/../.venv/bin/python"}
tmp=$(mktemp --suffix=.wav)
trap 'rm -f "$tmp"' EXIT
espeak-ng -v en-us -s 165 -w "$tmp" \
    "Hello, this is a test call to the voice bridge."
"$python" - "$tmp" "$here/hello.wav" <<'PY'
import sys

from xswarm.audio.wav import read_wav, write_wav

voice = read_wav(sys.argv[1], 24000)
write_wav(sys.argv[2], voice * (0.5 / max(abs(voice).max(), 1e-6)), 24000)
print(f"{sys.argv[2]}: {len(voice) / 24000:.2f} s at 24 kHz")
PY
