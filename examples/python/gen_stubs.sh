#!/usr/bin/env bash
# gen_stubs.sh [OUT_DIR] — generates the Python gRPC stubs of embedflow's
# protocol into OUT_DIR as the package embedflow.v1. The default, this
# directory, rewrites the stubs the package ships (embedflow/v1/): run it
# after changing proto/ and commit the result (a test compares them with
# the build's).
# Needs protobuf-compiler and protobuf-compiler-grpc (Debian), or
# `pip install grpcio-tools` (then: python3 -m grpc_tools.protoc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto_dir=$(cd "$here/../../proto" && pwd)
out=${1:-$here}
mkdir -p "$out"
plugin=$(command -v grpc_python_plugin || true)
cd "$proto_dir"
if [[ -n $plugin ]]; then
    protoc -I. --python_out="$out" --grpc_python_out="$out" \
        --plugin=protoc-gen-grpc_python="$plugin" embedflow/v1/*.proto
else
    python3 -m grpc_tools.protoc -I. --python_out="$out" \
        --grpc_python_out="$out" embedflow/v1/*.proto
fi
echo "stubs written to $out; use them with: export PYTHONPATH=$out"
