#!/usr/bin/env bash
# Builds the ferry images without a Docker daemon, a registry or a base image:
# buildah, FROM scratch, from the release binaries plus exactly what they need
# at run time. Tags them as the manifests expect
# (ghcr.io/ferry-dev/<image>:<workspace version>) and, with --oci-dir, writes
# each as an OCI archive an operator pushes with skopeo:
#
#   deploy/images/build.sh --oci-dir dist/
#   skopeo copy oci-archive:dist/ferry-init-0.1.0.tar docker://registry.example/ferry-init:0.1.0
#
# One source of truth: each image's run-time stage is read from its
# Dockerfile (deploy/docker/<image>.Dockerfile), the one users with a
# registry build with `docker build`. Its `FROM` (distroless
# cc-debian12:nonroot) becomes `FROM scratch` plus a base folder this script
# assembles, and `COPY --from=build /out/...` copies what the Dockerfile's
# build stage would have put in /out (this script runs that stage's `cargo
# build` and `install` commands on this machine). Everything else (USER,
# ENTRYPOINT, ENV, WORKDIR, EXPOSE, LABEL) is the Dockerfile's own line.
# tests/tests/pods.rs checks that the built images have the layout the
# Dockerfiles describe.
#
# The base folder stands in for distroless cc-debian12:nonroot: /etc/passwd
# and /etc/group with root, nobody and nonroot (65532), /etc/nsswitch.conf,
# the CA bundle, /tmp (1777), /home/nonroot (65532, 0700), /var/lib, and the
# shared libraries the binaries load (from `ldd`: glibc, libgcc_s, libm, the
# loader). No shell.
#
# Usage: deploy/images/build.sh [options] [IMAGE...]   (default: all three)
#   IMAGE              ferry-server, ferry-init, ferry
#   --registry PREFIX  image name prefix (default ghcr.io/ferry-dev)
#   --tag TAG          image tag (default: the workspace version)
#   --oci-dir DIR      also write DIR/<image>-<tag>.tar (OCI archive)
#   --no-build         use the release binaries already in the target dir
#   --binaries DIR     use the binaries in DIR instead (no build); the test
#                      suite passes its debug build, target/debug
#   --ca-bundle FILE   CA certificates (default /etc/ssl/certs/ca-certificates.crt)
#   --root DIR, --runroot DIR
#                      container storage (default: buildah's, i.e. what
#                      podman sees); the tests keep theirs under target/
#   --storage-driver D (default vfs: needs no overlay support)
# Needs: buildah, cargo (unless --no-build), ldd; runs as root or in a
# user namespace buildah can use.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { printf '[images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

registry=ghcr.io/ferry-dev
tag=
oci_dir=
build=1
binaries=
ca_bundle=/etc/ssl/certs/ca-certificates.crt
storage=(--storage-driver vfs)
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --oci-dir) oci_dir=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --binaries) [ -d "$2" ] || die "--binaries $2: no such directory"
                binaries=$(cd "$2" && pwd); build=; shift 2 ;;
    --ca-bundle) ca_bundle=$2; shift 2 ;;
    # Absolute: podman records these paths in its database and refuses
    # another spelling of them later.
    --root|--runroot) mkdir -p "$2"; storage+=("$1" "$(cd "$2" && pwd)"); shift 2 ;;
    --storage-driver) storage[1]=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) images+=("$1"); shift ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=(ferry-server ferry-init ferry)
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -s "$ca_bundle" ] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates, or --ca-bundle FILE)"

# The workspace version, as the manifests' tags and ferry submit's default
# --init-image use it.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || die "no version in [workspace.package] of $root/Cargo.toml"
tag=${tag:-$version}
target=${CARGO_TARGET_DIR:-$root/target}
release=${binaries:-$target/release}
work="$target/images"

# The Dockerfile's stages, continuation lines joined: "build" (first FROM up
# to the last) and "runtime" (the last FROM onwards).
stage() {
  local file=$1 which=$2
  awk -v which="$which" '
    { line = line $0 }
    /\\$/ { sub(/\\$/, " ", line); next }
    { lines[n++] = line; line = "" }
    END {
      for (i = 0; i < n; i++) if (lines[i] ~ /^FROM /) last = i
      for (i = 0; i < n; i++)
        if ((which == "runtime") == (i >= last)) print lines[i]
    }' "$file"
}

# The `cargo build ...` and `install ...` commands of the build stage's RUN,
# one per line.
build_commands() {
  stage "$1" build | grep '^RUN ' | sed 's/&&/\n/g' | sed -n 's/^.*\(cargo build .*\|install .*\)$/\1/p' \
    | sed 's/[[:space:]]*$//'
}

# Shared libraries a binary loads, as absolute paths (the loader included).
libraries() {
  ldd "$1" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]+ \(0x/ { print $1 }'
}

base="$work/base"
make_base() {
  rm -rf "$base" "$work/nonroot-home"
  # /var/lib exists in the base, so a COPY --chown below it gives away only
  # what it creates (as with distroless).
  mkdir -p "$base/etc/ssl/certs" "$base/tmp" "$base/home" "$base/var/lib" "$work/nonroot-home"
  chmod 1777 "$base/tmp"
  chmod 0700 "$work/nonroot-home"
  cat > "$base/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  cat > "$base/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
  printf 'hosts: files dns\n' > "$base/etc/nsswitch.conf"
  install -m 0644 "$ca_bundle" "$base/etc/ssl/certs/ca-certificates.crt"
}

build_image() {
  local name=$1
  local dockerfile="$root/deploy/docker/$name.Dockerfile"
  [ -f "$dockerfile" ] || die "no $dockerfile"
  local context="$work/$name"
  rm -rf "$context"
  mkdir -p "$context/out"
  local commands
  commands=$(build_commands "$dockerfile")
  [ -n "$commands" ] || die "$dockerfile: no cargo build / install in its build stage"
  while IFS= read -r command; do
    case "$command" in
      cargo\ build*) ;;  # run once for every image, above
      install*)
        # The build stage runs in /src with its target dir there and puts
        # its output in /out; here they are $release and $context/out.
        command=${command//target\/release\//$release/}
        command=${command// \/out\// $context/out/}
        eval "$command" || die "$name: $command (is the release build there? drop --no-build)" ;;
    esac
  done <<< "$commands"

  # What the binaries load, at the paths the loader looks for them.
  cp -a "$base" "$context/base"
  cp -a "$work/nonroot-home" "$context/nonroot-home"
  local binary lib
  for binary in "$context"/out/*; do
    [ -f "$binary" ] && [ -x "$binary" ] || continue
    for lib in $(libraries "$binary"); do
      mkdir -p "$context/base$(dirname "$lib")"
      cp -L "$lib" "$context/base$lib"
    done
  done

  {
    printf '# Generated by deploy/images/build.sh from deploy/docker/%s.Dockerfile\n' "$name"
    stage "$dockerfile" runtime | while IFS= read -r line; do
      case "$line" in
        FROM\ *) printf 'FROM scratch\nCOPY base/ /\nCOPY --chown=65532:65532 nonroot-home /home/nonroot\n' ;;
        COPY\ *--from=*) printf '%s\n' "$line" | sed 's/ --from=[^ ]*//; s# /out/# out/#' ;;
        *) printf '%s\n' "$line" ;;
      esac
    done
  } > "$context/Containerfile"

  local image="$registry/$name:$tag"
  log "$name: buildah bud -t $image"
  buildah "${storage[@]}" bud --quiet --identity-label=false --layers=false \
    --build-arg "VERSION=$version" -t "$image" -f "$context/Containerfile" "$context" >/dev/null
  if [ -n "$oci_dir" ]; then
    mkdir -p "$oci_dir"
    local archive="$oci_dir/$name-$tag.tar"
    rm -f "$archive"
    buildah "${storage[@]}" push --quiet "$image" "oci-archive:$archive:$image"
    log "$name: wrote $archive"
  fi
  printf '%s\n' "$image"
}

# One cargo build for every image's binaries: the same `-p PKG --bin BIN`
# its Dockerfile builds, with features unified over the three packages (as
# `cargo build --release` of the default members does) instead of three
# builds that would each compile the shared crates again.
if [ -n "$build" ]; then
  selection=()
  for name in "${images[@]}"; do
    [ -f "$root/deploy/docker/$name.Dockerfile" ] || die "no deploy/docker/$name.Dockerfile"
    while read -r -a words; do
      for ((i = 0; i < ${#words[@]} - 1; i++)); do
        case "${words[i]}" in -p|--bin) selection+=("${words[i]}" "${words[i+1]}") ;; esac
      done
    done < <(build_commands "$root/deploy/docker/$name.Dockerfile" | grep '^cargo build')
  done
  log "cargo build --release --locked ${selection[*]}"
  (cd "$root" && cargo build --release --locked "${selection[@]}")
fi

mkdir -p "$work"
make_base
for name in "${images[@]}"; do
  build_image "$name"
done
