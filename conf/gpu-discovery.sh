#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript): prints the GPUs this executor may
# use as Spark's ResourceInformation JSON, e.g. {"name": "gpu", "addresses": ["0", "1"]}.
# nvidia-smi lists the GPUs visible in the container (YARN and Kubernetes isolate them), numbered as CUDA
# numbers them there, so an address is also a torch device index (cuda:N). Without a GPU it prints an empty
# list and Spark refuses to start the executor with a message naming the missing resource.
set -euo pipefail

addresses=""
if command -v nvidia-smi >/dev/null 2>&1; then
  while read -r index; do
    [[ -n "${index}" ]] && addresses+="${addresses:+, }\"${index// /}\""
  done < <(nvidia-smi --query-gpu=index --format=csv,noheader)
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
