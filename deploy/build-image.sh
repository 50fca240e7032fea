#!/usr/bin/env bash
# Build the image and push it where your cluster pulls from:
#   deploy/build-image.sh registry.example.com/team/kimi-proxy
# Tags it with the package's version and the commit; prints the name to put in
# deploy/kubernetes/deployment.yaml (or: kubectl set image deploy/kimi-proxy kimi-proxy=NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
repository="${1:?usage: deploy/build-image.sh REGISTRY/NAME}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="$version-$(git rev-parse --short HEAD)"
docker build -t "$repository:$tag" .
docker push "$repository:$tag"
echo "$repository:$tag"
