#!/usr/bin/env bash
# Brings up (or updates) the kind e2e environment and writes target/kind/env:
#   Docker (lib/host.sh) -> Kubernetes and Go tools -> node image -> kind cluster
#   prapi-e2e (1 control plane, 2 workers) -> Kafka, dynalite and moto on the kind
#   network's gateway -> images of prapi, prapi-operator and Skipper, loaded into
#   the nodes -> Skipper as the ingress (127.0.0.1:INGRESS_PORT) -> the prapi
#   chart, installed with helm as users do (--routing skipper --store aws).
# Idempotent: what exists and is current is reused; changed images are rebuilt,
# loaded and rolled out by `helm upgrade`. See docs/development.md (kind).
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=../testenv/lib/k8s.sh
source "$TESTENV_DIR/lib/k8s.sh"
# shellcheck source=lib/host.sh
source "$KIND_DIR/lib/host.sh"
# shellcheck source=lib/images.sh
source "$KIND_DIR/lib/images.sh"
# shellcheck source=lib/tools.sh
source "$KIND_DIR/lib/tools.sh"
# shellcheck source=lib/node.sh
source "$KIND_DIR/lib/node.sh"

started=$SECONDS
mkdir -p "$KIND_STATE" "$KIND_LOGS" "$CACHE_DIR"
need_cmd python3 curl
ensure_cmd_from_apt jq jq
ensure_cmd_from_apt busybox busybox-static
ensure_docker

# Builds share CACHE_DIR with other checkouts: one installs at a time.
exec {install_lock}>"$CACHE_DIR/.install.lock"
if ! flock -n "$install_lock"; then
    klog "another checkout is installing into $CACHE_DIR; waiting for it"
    flock "$install_lock"
fi
# The Debian roots of the node, base and builder images are mostly downloads and unpacking:
# made side by side in the background while the Go tools build (each is cached by its package
# list, so this is a no-op once made). Waited for before any is used, and on an early exit too,
# so that nothing this script started outlives it.
rootfs_jobs=()
# Only these jobs: dockerd, when this script started it, is a child too and keeps running.
wait_rootfs_jobs() {
    local job
    for job in "${rootfs_jobs[@]}"; do wait "$job" 2>/dev/null || true; done
}
trap wait_rootfs_jobs EXIT
if [[ -z ${PRAPI_KIND_NODE_IMAGE:-} || -z ${PRAPI_BASE_IMAGE+set} || -z ${PRAPI_BUILDER_IMAGE+set} ]]; then
    ensure_cmd_from_apt debootstrap debootstrap
fi
[[ -n ${PRAPI_KIND_NODE_IMAGE:-} ]] || { debian_rootfs node "$NODE_PACKAGES" >/dev/null & rootfs_jobs+=("$!"); }
[[ -n ${PRAPI_BASE_IMAGE+set} ]] || { debian_rootfs base "${BASE_PACKAGES// /,}" >/dev/null & rootfs_jobs+=("$!"); }
[[ -n ${PRAPI_BUILDER_IMAGE+set} ]] || { debian_rootfs builder "$BUILDER_PACKAGES" >/dev/null & rootfs_jobs+=("$!"); }
install_k8s
install_tools
for job in "${rootfs_jobs[@]}"; do
    wait "$job" || die "a Debian root filesystem could not be made (logs: $KIND_LOGS/rootfs-*.log)"
done
# Where registries are reachable, stock images can stand in for the locally built ones
# (e.g. PRAPI_KIND_NODE_IMAGE=kindest/node:v1.34.0, PRAPI_BASE_IMAGE and PRAPI_BUILDER_IMAGE
# unset to use the Dockerfiles' defaults); here nothing is pulled unless asked for.
node="${PRAPI_KIND_NODE_IMAGE:-$(node_image)}"
base="${PRAPI_BASE_IMAGE-$(base_image)}"
builder="${PRAPI_BUILDER_IMAGE-$(builder_image)}"
flock -u "$install_lock"

# build_image NAME DOCKERFILE: builds NAME from the repository, tags it with its
# image id (so that a changed image is a changed tag and rolls out), prints the tag.
build_image() {
    local name="$1" dockerfile="$2" id t0=$SECONDS
    klog "building image $name ($dockerfile)"
    local args=()
    [[ -z $builder ]] || args+=(--build-arg BUILDER_IMAGE="$builder")
    [[ -z $base ]] || args+=(--build-arg BASE_IMAGE="$base")
    step "image-$name" docker_build -f "$REPO_ROOT/$dockerfile" -t "$name:e2e" "${args[@]}" "$REPO_ROOT"
    id="$(docker image inspect -f '{{.Id}}' "$name:e2e")"
    id="${id#sha256:}"
    docker tag "$name:e2e" "$name:${id:0:12}"
    # Earlier builds' tags: the nodes keep what they loaded; the host needs only this one.
    local old
    for old in $(docker images "$name" --format '{{.Repository}}:{{.Tag}}'); do
        [[ $old == "$name:e2e" || $old == "$name:${id:0:12}" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done
    klog "image $name:${id:0:12} ready ($((SECONDS - t0))s)"
    echo "$name:${id:0:12}"
}
operator_image="$(build_image prapi-operator operator/Dockerfile)"
prapi_image="$(build_image prapi dataplane/Dockerfile)"

skipper_image() {
    local dir key image
    key="$(inputs_hash "$KIND_TOOLS/skipper.installed" <(echo "$base"))"
    image="prapi-local/skipper:$SKIPPER_VERSION-$key"
    if ! image_exists "$image"; then
        dir="$(mktemp -d)"
        mkdir -p "$dir/usr/local/bin"
        install -m 0755 "$KIND_TOOLS/bin/skipper" "$dir/usr/local/bin/skipper"
        printf 'FROM %s\nCOPY usr/local/bin/skipper /usr/local/bin/skipper\nUSER 65532:65532\nENTRYPOINT ["/usr/local/bin/skipper"]\n' \
            "${base:-gcr.io/distroless/static-debian12:nonroot}" >"$dir/Dockerfile"
        step image-skipper docker_build -t "$image" "$dir"
        rm -rf "$dir"
    fi
    echo "$image"
}
skipper="$(skipper_image)"

# The cluster: reused when it exists (its node image is not changed under it:
# `make kind-down` first to move to a new one).
if kind_cli get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    klog "reusing kind cluster $KIND_CLUSTER"
else
    ingress_port="$(free_port)"
    echo "$ingress_port" >"$KIND_STATE/ingress-port"
    sed -e "s|NODE_IMAGE|$node|" -e "s|INGRESS_PORT|$ingress_port|" "$KIND_DIR/cluster.yaml" >"$KIND_STATE/cluster.yaml"
    klog "creating kind cluster $KIND_CLUSTER (node image $node)"
    step kind-create kind_cli create cluster --name "$KIND_CLUSTER" --config "$KIND_STATE/cluster.yaml" \
        --kubeconfig "$KUBECONFIG_FILE" --wait 180s
fi
kind_cli get kubeconfig --name "$KIND_CLUSTER" >"$KUBECONFIG_FILE"
ingress_port="$(<"$KIND_STATE/ingress-port")"

# Kafka, dynalite and moto for the cluster: the test environment's own scripts,
# listening on the kind network's gateway (an address of this host that pods
# reach through their node).
gateway="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9.]+$')" ||
    die "no IPv4 gateway on the docker network 'kind'"
if [[ -f $PRAPI_TESTENV_DIR/env ]] && ! grep -q "$gateway" "$PRAPI_TESTENV_DIR/env"; then
    klog "the kind network's gateway changed: restarting Kafka, dynalite and moto"
    "$TESTENV_DIR/down.sh"
fi
step services env PRAPI_TESTENV_HOST="$gateway" "$TESTENV_DIR/up.sh" kafka dynalite moto
# shellcheck source=/dev/null
source "$PRAPI_TESTENV_DIR/env"

klog "loading images into the nodes"
step kind-load kind_cli load docker-image --name "$KIND_CLUSTER" "$prapi_image" "$operator_image" "$skipper"

klog "installing Skipper"
skipper_dir="$(module_dir skipper "github.com/zalando/skipper@$SKIPPER_VERSION")"
step skipper kind_kubectl apply --server-side -f "$skipper_dir/dataclients/kubernetes/deploy/apply/routegroups_crd.yaml"
step skipper kind_kubectl wait --for=condition=Established --timeout=60s crd/routegroups.zalando.org
sed "s|SKIPPER_IMAGE|$skipper|" "$KIND_DIR/manifests/skipper.yaml" | step skipper kind_kubectl apply -f -
step skipper kind_kubectl -n "$SKIPPER_NAMESPACE" rollout status deployment/skipper-ingress --timeout=180s

klog "installing the prapi chart (release $RELEASE in $OPERATOR_NAMESPACE)"
aws_env=(
    "AWS_ENDPOINT_URL_DYNAMODB=$AWS_ENDPOINT_URL_DYNAMODB"
    "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING=$AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING"
    "AWS_REGION=$AWS_REGION" "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    "AWS_EC2_METADATA_DISABLED=true"
)
values="$KIND_STATE/values.yaml"
python3 - "$values" "$operator_image" "$prapi_image" "${aws_env[@]}" <<'PY'
import json, sys
out, operator, prapi, *env = sys.argv[1:]
env = [dict(zip(("name", "value"), e.split("=", 1))) for e in env]
repo, tag = operator.rsplit(":", 1)
values = {
    "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
    "defaultImage": prapi,
    "routing": {"provider": "skipper"},
    "store": "aws",
    "awsEnv": env,
    # The suite checks where the ingress places ids by the pod that answered (X-Served-By).
    # dynalite on a loaded 2-core host answers in tens of milliseconds, not DynamoDB's few: with
    # the data plane's 10 ms / 100 ms read timeouts, cold reads would fail as store-unavailable.
    "dataPlane": {"env": env, "servedByHeader": True,
                  "storeReadTimeoutMs": 1000, "storeFallbackReadTimeoutMs": 2000},
}
with open(out, "w") as f:
    json.dump(values, f, indent=2)  # JSON is YAML
PY
step helm "$K8S_BIN/helm" --kubeconfig "$KUBECONFIG_FILE" upgrade --install "$RELEASE" "$REPO_ROOT/charts/prapi-operator" \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace -f "$values" --wait --timeout 180s

tmp="$KIND_ENV_FILE.tmp"
{
    echo "# Written by e2e/kind/up.sh at $(date -Is); source it."
    echo "export PRAPI_KIND=1"
    echo "export PRAPI_KIND_CLUSTER='$KIND_CLUSTER'"
    echo "export KUBECONFIG='$KUBECONFIG_FILE'"
    echo "export PRAPI_INGRESS_URL='http://127.0.0.1:$ingress_port'"
    echo "export PRAPI_OPERATOR_NAMESPACE='$OPERATOR_NAMESPACE'"
    echo "export PRAPI_RELEASE='$RELEASE'"
    echo "export PRAPI_IMAGE='$prapi_image'"
    echo "export PRAPI_OPERATOR_IMAGE='$operator_image'"
    echo "export KAFKA_BOOTSTRAP_SERVERS='$KAFKA_BOOTSTRAP_SERVERS'"
    echo "export PRAPI_KAFKA_BOOTSTRAP_IN_CLUSTER='$KAFKA_BOOTSTRAP_SERVERS'"
    echo "export AWS_ENDPOINT_URL_DYNAMODB='$AWS_ENDPOINT_URL_DYNAMODB'"
    echo "export AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING='$AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING'"
    echo "export AWS_REGION='$AWS_REGION'"
    echo "export AWS_DEFAULT_REGION='$AWS_REGION'"
    echo "export AWS_ACCESS_KEY_ID='$AWS_ACCESS_KEY_ID'"
    echo "export AWS_SECRET_ACCESS_KEY='$AWS_SECRET_ACCESS_KEY'"
    echo "export AWS_CONFIG_FILE='/dev/null'"
    echo "export AWS_SHARED_CREDENTIALS_FILE='/dev/null'"
    echo "export AWS_EC2_METADATA_DISABLED=true"
    echo "export PATH='$K8S_BIN':\"\$PATH\""
} >"$tmp"
mv "$tmp" "$KIND_ENV_FILE"
klog "kind environment ready in $((SECONDS - started))s: source $KIND_ENV_FILE"
