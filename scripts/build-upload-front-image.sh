#!/usr/bin/env bash
# Builds the upload front's container image, offline: a static `berth` (glibc, statically
# linked) and the host's CA bundle in an empty image (infra/upload-front/Dockerfile).
#
#   scripts/build-upload-front-image.sh [--arch x86_64|arm64] [--profile release|dev] [--tag TAG]
#                                       [--binary-only]
#
# --arch     the image's CPU architecture: that of this machine (the default); the binary is
#            linked statically against glibc, which a cross linker cannot do.
# --profile  the Cargo profile (default release; the tests use dev, which compiles faster).
# --tag      the image's name (default berth-upload-front:<version>).
# --binary-only  only compile the static binary (target/<triple>/<profile>/berth); no docker.
#
# Prints the image's name on its last line. Needs cargo and docker (DOCKER_HOST is honoured).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
arch=$(uname -m)
profile=release
tag=""
binary_only=false
while (($#)); do
    case $1 in
        --arch) arch=$2; shift 2 ;;
        --profile) profile=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --binary-only) binary_only=true; shift ;;
        *) echo "usage: $0 [--arch x86_64|arm64] [--profile release|dev] [--tag TAG] [--binary-only]" >&2; exit 2 ;;
    esac
done
case $arch in
    x86_64 | amd64) triple=x86_64-unknown-linux-gnu platform=linux/amd64 ;;
    aarch64 | arm64) triple=aarch64-unknown-linux-gnu platform=linux/arm64 ;;
    *) echo "build-upload-front-image: unknown architecture $arch" >&2; exit 2 ;;
esac
version=$(cargo metadata --format-version 1 --no-deps | python3 -c \
    'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "berth"))')
tag=${tag:-berth-upload-front:$version}
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca_bundle ]] || { echo "build-upload-front-image: no CA bundle at $ca_bundle (apt install ca-certificates)" >&2; exit 1; }

# Static: the image has no C library. Only the target's artifacts get the flag (with --target,
# build scripts and procedural macros stay dynamic, as they must).
flags_var="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$triple")_RUSTFLAGS"
export "$flags_var=-C target-feature=+crt-static"
if [[ $triple != "$(rustc -vV | sed -n 's/^host: //p')" ]]; then
    echo "build-upload-front-image: build the $arch image on a $arch machine (this one is $(uname -m))" >&2
    exit 2
fi
echo "build-upload-front-image: cargo build --profile $profile --target $triple -p berth" >&2
cargo build --profile "$profile" --target "$triple" -p berth --bin berth >&2
dir=$profile
[[ $profile != dev ]] || dir=debug
binary=target/$triple/$dir/berth
if $binary_only; then
    echo "$binary"
    exit 0
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/berth"
cp "$ca_bundle" "$context/ca-certificates.crt"
cp infra/upload-front/Dockerfile "$context/Dockerfile"
echo "build-upload-front-image: docker build --platform $platform -t $tag" >&2
DOCKER_BUILDKIT=0 docker build --quiet --platform "$platform" -t "$tag" "$context" >&2
echo "$tag"
