#!/bin/bash
# Context switches per message, by thread name, over 4 s of a paced sotto-load run.
# Run from the repository, after `cargo build --release`:
#   RATE=300 bash docs/probes/switches.sh --mode normal --clients 10 --messages 1500 --rate 300
# (the run must last longer than 7 s: the counts are read at 3 s and at 7 s).
set -e
snap() {
  for t in /proc/$1/task/*; do
    echo "$(cat $t/comm) $(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' $t/status)"
  done | awk '{v[$1]+=$2; n[$1]+=$3; c[$1]++} END {for (k in v) print k, c[k], v[k], n[k]}' | sort
}
./target/release/sotto-load "$@" > /dev/null &
P=$!
sleep 3; snap $P > /tmp/switches.1
sleep 4; snap $P > /tmp/switches.2
wait $P
join /tmp/switches.1 /tmp/switches.2 | awk -v rate="$RATE" \
  '{printf "%-16s threads %3d  switches per message %.2f\n", $1, $5, ($6 - $3 + $7 - $4) / (4 * rate)}'
