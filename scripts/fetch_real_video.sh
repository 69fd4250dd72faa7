#!/usr/bin/env bash
# Real pedestrian footage for the tests and benchmarks that use it: OpenCV's sample `vtest.avi` (768×576, 10 fps,
# 795 frames of pedestrians walking), taken from Debian's `opencv-doc` package (BSD-3-Clause, OpenCV's own
# sample data) with `apt-get download`: no root, nothing installed, only that one file kept.
#   bash scripts/fetch_real_video.sh            # writes .cache/real-video/vtest.avi
# Tests that need it skip, naming this script, where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.cache/real-video/vtest.avi
if [ -s "$target" ]; then echo "$target is already there"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt downloads as its own user
(cd "$work" && apt-get download -qq opencv-doc >/dev/null)
mkdir -p "$(dirname "$target")"
dpkg-deb --fsys-tarfile "$work"/opencv-doc_*.deb | tar -xO ./usr/share/doc/opencv-doc/examples/data/vtest.avi > "$target.part"
mv "$target.part" "$target"
echo "wrote $target ($(stat -c %s "$target") bytes)"
