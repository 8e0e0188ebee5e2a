#!/bin/bash
# Finding 5's scenario, scaled: arrays depending on a long job in queue slow, then one job in
# queue fast (higher priority, its own environment); prints seconds from its submit to SUCCEEDED.
# Usage: [B=path/to/batchctl] [N=children per array] tests/scenarios/admission_by_queue.sh
# Prints one JSON line last. Needs root only for --process-user 0:0 (drop it otherwise).
B=${B:-$(dirname "$0")/../../target/release/batchctl}
N=${N:-25000}
D=$(mktemp -d); PORT=$((7900 + RANDOM % 50))
$B server --listen 127.0.0.1:$PORT --data-dir $D/data --process-user 0:0 > $D/out 2> $D/err & SP=$!
sleep 1.5
export BATCHCTL_SERVER=http://127.0.0.1:$PORT
cat > $D/r.yaml <<'Y'
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: envslow}
spec: {type: process, state: ENABLED, maxVcpus: 1, maxMemoryMiB: 1024}
---
apiVersion: batchctl/v1
kind: ComputeEnvironment
metadata: {name: envfast}
spec: {type: process, state: ENABLED, maxVcpus: 1, maxMemoryMiB: 1024}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: slow}
spec: {priority: 1, computeEnvironmentOrder: [{order: 1, computeEnvironment: envslow}]}
---
apiVersion: batchctl/v1
kind: JobQueue
metadata: {name: fast}
spec: {priority: 10, computeEnvironmentOrder: [{order: 1, computeEnvironment: envfast}]}
---
apiVersion: batchctl/v1
kind: JobDefinition
metadata: {name: t}
spec:
  containerProperties: {image: busybox, command: ['true'], resourceRequirements: [{type: VCPU, value: '1'}, {type: MEMORY, value: '16'}]}
Y
$B apply -f $D/r.yaml >/dev/null
L=$($B -o json submit --queue slow --definition t -- sleep 600 | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobId"])')
for i in 1 2 3 4; do $B submit --queue slow --definition t --array-size $N --depends-on jobId=$L >/dev/null; done
sleep 0.2
T0=$(date +%s.%N)
$B submit --queue fast --definition t --wait >/dev/null 2>&1
T1=$(date +%s.%N)
kill -9 $SP; wait $SP 2>/dev/null; pkill -f "sleep 600"; rm -rf $D
python3 -c "import json; print(json.dumps({'scenario': 'admission_by_queue', 'children': 4 * $N, 'fastJobSeconds': round($T1-$T0, 3)}))"
