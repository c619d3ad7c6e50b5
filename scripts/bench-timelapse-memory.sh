#!/usr/bin/env bash
# Peak memory of the broadcast service (embedded) while it renders the timelapse of N 1024x1024
# versions (PROTOCOL.md §15): VmHWM is reset (clear_refs 5) just before the request, so the
# growth is what the timelapse needed. Needs `cargo build --workspace --bins` (BIN: where they are).
# Usage: N=40 scripts/bench-timelapse-memory.sh
set -euo pipefail
N=${N:-40}
PORT=${PORT:-18931}
DATA=$(mktemp -d)
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/debug}
$BIN/broadcast-service --listen 127.0.0.1:$PORT --data-dir $DATA --history-interval 0s --history-keep 1000 --flush-interval 1h --wal off > $DATA/bs.log 2>&1 &
BS=$!
trap 'kill $BS; rm -rf $DATA' EXIT
for i in $(seq 1 50); do curl -sf 127.0.0.1:$PORT/livez >/dev/null && break; sleep 0.2; done
for i in $(seq 1 $N); do
  $BIN/raster --url ws://127.0.0.1:$PORT draw big --random 30 --size 1024x1024 --rate 0 --seed $i > /dev/null
done
for i in $(seq 1 100); do
  n=$(curl -s 127.0.0.1:$PORT/pictures/big/history | grep -o '"seq"' | wc -l)
  [ "$n" -ge "$N" ] && break; sleep 0.2
done
echo "versions: $n"
ls -la $DATA/pictures/big.history | head -3
du -sh $DATA/pictures/big.history
echo 5 > /proc/$BS/clear_refs
grep -E "VmHWM|VmRSS" /proc/$BS/status | tr '\n' ' '; echo " (before, peak reset)"
/usr/bin/time -f "timelapse: %e s" curl -s -o $DATA/t.png -D $DATA/h.txt "127.0.0.1:$PORT/pictures/big/timelapse?width=1024&frames=$N"
grep -i "x-timelapse" $DATA/h.txt | tr -d '\r'
ls -la $DATA/t.png
grep -E "VmHWM|VmRSS" /proc/$BS/status | tr '\n' ' '; echo " (after the timelapse)"
echo 5 > /proc/$BS/clear_refs
curl -s -o /dev/null "127.0.0.1:$PORT/pictures/big/history/$(curl -s 127.0.0.1:$PORT/pictures/big/history | grep -o '"seq":[0-9]*' | tail -1 | cut -d: -f2).png"
grep -E "VmHWM|VmRSS" /proc/$BS/status | tr '\n' ' '; echo " (after fetching one version)"
