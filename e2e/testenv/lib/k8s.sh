# shellcheck shell=bash
# Kubernetes: etcd, kube-apiserver (TLS, RBAC), kube-controller-manager,
# kube-scheduler, kwok with fake nodes, the Gateway API standard CRDs and Envoy
# Gateway's BackendTrafficPolicy CRD.
# Binaries are built from the Go module proxy through the wrapper modules in
# e2e/testenv/k8s and e2e/testenv/kwok.

K8S_HOME="$CACHE_DIR/k8s-$K8S_VERSION"
K8S_BIN="$K8S_HOME/bin"
KWOK_HOME="$CACHE_DIR/kwok-$KWOK_VERSION"
GATEWAY_API_HOME="$CACHE_DIR/gateway-api-$GATEWAY_API_VERSION"
ENVOY_GATEWAY_HOME="$CACHE_DIR/envoy-gateway-$ENVOY_GATEWAY_VERSION"
K8S_DIR="$STATE_DIR/k8s"
PKI_DIR="$K8S_DIR/pki"
# Names of the fake nodes kwok manages; spread over three zones so that
# topology spread constraints have something to spread over.
KWOK_NODES=(kwok-node-0 kwok-node-1 kwok-node-2)
KWOK_ZONES=(zone-a zone-b zone-c)
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.1/16

k8s_components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# Every k8s.io/* staging module, etcd and helm in k8s/go.mod must be the
# version named in versions.env, so that the cache key tells the truth.
check_k8s_pins() {
    local gomod="$TESTENV_DIR/k8s/go.mod" bad
    grep -Eq "k8s.io/kubernetes $K8S_VERSION( // indirect)?\$" "$gomod" || die "k8s/go.mod does not require k8s.io/kubernetes $K8S_VERSION"
    grep -Eq "go.etcd.io/etcd/server/v3 $ETCD_VERSION( // indirect)?\$" "$gomod" || die "k8s/go.mod does not require etcd $ETCD_VERSION"
    grep -Eq "helm.sh/helm/v3 $HELM_VERSION( // indirect)?\$" "$gomod" || die "k8s/go.mod does not require helm $HELM_VERSION"
    bad="$(grep '=>' "$gomod" | grep -v " $K8S_STAGING_VERSION\$" || true)"
    [[ -z $bad ]] || die "k8s/go.mod replaces staging modules with other versions than $K8S_STAGING_VERSION: $bad"
    grep -Eq "sigs.k8s.io/kwok $KWOK_VERSION( // indirect)?\$" "$TESTENV_DIR/kwok/go.mod" || die "kwok/go.mod does not require kwok $KWOK_VERSION"
}

# The linker flags of Kubernetes' release builds that set the version
# (hack/lib/version.sh): kubeadm, kubelet and kubectl report and check it.
k8s_ldflags() {
    local flags="-s -w" pkg minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$flags"
}

install_k8s() {
    need_cmd go
    ensure_cmd_from_apt openssl openssl
    check_k8s_pins
    local stamp tmp
    # One `go build` for all control plane commands, the kind nodes' kubelet,
    # kubeadm and kube-proxy, kubectl and helm, so the packages they share
    # (client-go, apiserver, ...) are compiled once. The version is linked in
    # as Kubernetes' own release build does: kubeadm refuses to run with the
    # unstamped "v0.0.0-master" a module build reports otherwise.
    stamp="$(inputs_hash "$TESTENV_DIR/k8s/go.mod" "$TESTENV_DIR/k8s/go.sum" <(go version) <(k8s_ldflags) <(echo cgo=0))"
    if ! [[ -f $K8S_HOME/.installed && $(<"$K8S_HOME/.installed") == "$stamp" ]]; then
        stop_k8s
        log "building etcd $ETCD_VERSION, Kubernetes $K8S_VERSION and helm $HELM_VERSION into $K8S_BIN (cold: tens of minutes)"
        rm -rf "$K8S_HOME"
        tmp="$K8S_HOME/bin.tmp"
        mkdir -p "$tmp"
        local t0=$SECONDS
        # Static (no cgo), as Kubernetes' release builds are: the kind node image runs the
        # control plane from images that hold nothing but these binaries.
        (cd "$TESTENV_DIR/k8s" && run_logged k8s-build env CGO_ENABLED=0 go build -trimpath -ldflags="$(k8s_ldflags)" -o "$tmp/" \
            go.etcd.io/etcd/server/v3 \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler \
            k8s.io/kubernetes/cmd/kubectl \
            k8s.io/kubernetes/cmd/kubelet \
            k8s.io/kubernetes/cmd/kubeadm \
            k8s.io/kubernetes/cmd/kube-proxy \
            helm.sh/helm/v3/cmd/helm)
        # The etcd main package is the module root, so go names it after "server".
        mv "$tmp/server" "$tmp/etcd"
        mv "$tmp" "$K8S_BIN"
        echo "$stamp" >"$K8S_HOME/.installed"
        log "built the Kubernetes binaries in $((SECONDS - t0))s"
    fi
    stamp="$(inputs_hash "$TESTENV_DIR/kwok/go.mod" "$TESTENV_DIR/kwok/go.sum" <(go version))"
    if ! [[ -f $KWOK_HOME/.installed && $(<"$KWOK_HOME/.installed") == "$stamp" ]]; then
        stop_k8s
        log "building kwok $KWOK_VERSION into $KWOK_HOME/bin"
        rm -rf "$KWOK_HOME"
        mkdir -p "$KWOK_HOME/bin"
        (cd "$TESTENV_DIR/kwok" && run_logged kwok-build go build -trimpath -ldflags='-s -w' \
            -o "$KWOK_HOME/bin/" sigs.k8s.io/kwok/cmd/kwok)
        echo "$stamp" >"$KWOK_HOME/.installed"
    fi
    if ! [[ -f $GATEWAY_API_HOME/.installed ]]; then
        log "fetching the Gateway API $GATEWAY_API_VERSION CRDs"
        local dir
        dir="$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" ||
            die "go mod download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION failed"
        rm -rf "$GATEWAY_API_HOME"
        mkdir -p "$GATEWAY_API_HOME/crds"
        cp "$dir"/config/crd/standard/*.yaml "$GATEWAY_API_HOME/crds/"
        touch "$GATEWAY_API_HOME/.installed"
    fi
    if ! [[ -f $ENVOY_GATEWAY_HOME/.installed ]]; then
        log "fetching Envoy Gateway $ENVOY_GATEWAY_VERSION's BackendTrafficPolicy CRD"
        local eg
        eg="$(go mod download -json "github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" ||
            die "go mod download github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION failed"
        rm -rf "$ENVOY_GATEWAY_HOME"
        mkdir -p "$ENVOY_GATEWAY_HOME/crds"
        cp "$eg/charts/gateway-helm/crds/generated/gateway.envoyproxy.io_backendtrafficpolicies.yaml" \
            "$ENVOY_GATEWAY_HOME/crds/"
        touch "$ENVOY_GATEWAY_HOME/.installed"
    fi
}

# Certificates and service-account keys, made once per environment directory.
make_pki() {
    [[ -f $PKI_DIR/.done ]] && return 0
    log "generating certificates and service-account keys in $PKI_DIR"
    rm -rf "$PKI_DIR"
    mkdir -p "$PKI_DIR"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" -days 3650 \
        -subj "/CN=prapi-testenv-ca" 2>/dev/null
    mkcert apiserver kube-apiserver "" serverAuth \
        "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    mkcert admin admin system:masters clientAuth
    mkcert kube-controller-manager system:kube-controller-manager "" clientAuth
    mkcert kube-scheduler system:kube-scheduler "" clientAuth
    # kwok plays every kubelet; as system:masters it may write all node and pod status.
    mkcert kwok kwok system:masters clientAuth
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI_DIR/sa.key" 2>/dev/null
    openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
    chmod 600 "$PKI_DIR"/*.key
    touch "$PKI_DIR/.done"
}

# The front proxy: kube-apiserver's client certificate towards aggregated API
# servers (the operator's external metrics API), from a CA of its own as in a
# kubeadm cluster. Made apart from make_pki so that environment directories
# made before it get it too.
make_front_proxy_pki() {
    [[ -f $PKI_DIR/front-proxy-client.crt ]] && return 0
    log "generating the front proxy's certificates in $PKI_DIR"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI_DIR/front-proxy-ca.key" -out "$PKI_DIR/front-proxy-ca.crt" -days 3650 \
        -subj "/CN=prapi-testenv-front-proxy-ca" 2>/dev/null
    MKCERT_CA=front-proxy-ca mkcert front-proxy-client front-proxy-client "" clientAuth
    chmod 600 "$PKI_DIR"/*.key
}

# write_kubeconfig USER FILE: a kubeconfig for USER's certificate.
write_kubeconfig() {
    local user="$1" file="$2" port
    port="$(recorded_port kube-apiserver)"
    rm -f "$file"
    "$K8S_BIN/kubectl" --kubeconfig="$file" config set-cluster testenv \
        --server="https://127.0.0.1:$port" --certificate-authority="$PKI_DIR/ca.crt" --embed-certs=true >/dev/null
    "$K8S_BIN/kubectl" --kubeconfig="$file" config set-credentials "$user" \
        --client-certificate="$PKI_DIR/$user.crt" --client-key="$PKI_DIR/$user.key" --embed-certs=true >/dev/null
    "$K8S_BIN/kubectl" --kubeconfig="$file" config set-context testenv --cluster=testenv --user="$user" >/dev/null
    "$K8S_BIN/kubectl" --kubeconfig="$file" config use-context testenv >/dev/null
}

stop_k8s() {
    local c
    for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
        stop_component "$c"
    done
}

k8s_is_running() {
    local c
    for c in "${k8s_components[@]}"; do
        is_running "$c" || return 1
    done
}

apiserver_ready() {
    curl -fsS --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
        "https://127.0.0.1:$(recorded_port kube-apiserver)/readyz" | grep -q '^ok$'
}

# healthz of a component that serves it on its own secure port (self-signed).
component_healthy() {
    curl -fsSk "https://127.0.0.1:$(recorded_port "$1")/healthz" | grep -q '^ok$'
}

kctl() {
    "$K8S_BIN/kubectl" --kubeconfig="$K8S_DIR/admin.kubeconfig" "$@"
}

nodes_ready() {
    local ready
    ready="$(kctl get nodes -l type=kwok \
        -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
        grep -c '^True$' || true)"
    ((ready == ${#KWOK_NODES[@]}))
}

# Whether every CRD named is Established. (`kubectl wait --for=condition=Established` fails at
# once on a CRD created a moment ago whose status has no conditions yet.)
crds_established() {
    local crd
    for crd in "$@"; do
        [[ $(kctl get "crd/$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}') == True ]] || return 1
    done
}

default_service_account_exists() {
    kctl get serviceaccount default -n default
}

apply_nodes() {
    local i manifest=""
    for i in "${!KWOK_NODES[@]}"; do
        manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: ${KWOK_NODES[$i]}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: ${KWOK_NODES[$i]}
    topology.kubernetes.io/zone: ${KWOK_ZONES[$i]}
    node-role.kubernetes.io/agent: \"\"
status:
  allocatable: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
  capacity: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
"
    done
    kctl apply -f - <<<"$manifest"
}

start_k8s() {
    if k8s_is_running && apiserver_ready; then
        log "kubernetes is already running"
        return 0
    fi
    # The parts depend on each other's addresses and state: restart them together.
    stop_k8s
    make_pki
    make_front_proxy_pki
    local etcd_port etcd_peer_port api_port
    etcd_port="$(pick_port etcd)"
    etcd_peer_port="$(pick_port etcd-peer)"
    api_port="$(pick_port kube-apiserver)"
    pick_port kube-controller-manager >/dev/null
    pick_port kube-scheduler >/dev/null

    rm -rf "$K8S_DIR/etcd"
    mkdir -p "$K8S_DIR/etcd"
    log "starting etcd on 127.0.0.1:$etcd_port"
    # No fsync: the data is thrown away with the environment.
    start_bg etcd "$K8S_DIR/etcd" "$K8S_BIN/etcd" \
        --name testenv --data-dir "$K8S_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "testenv=http://127.0.0.1:$etcd_peer_port" \
        --unsafe-no-fsync --quota-backend-bytes=4294967296 --log-level=warn
    wait_healthy etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"

    log "starting kube-apiserver on 127.0.0.1:$api_port"
    start_bg kube-apiserver "$PKI_DIR/apiserver.crt" "$K8S_BIN/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
        --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
        --client-ca-file="$PKI_DIR/ca.crt" \
        --requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
        --proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
        --authorization-mode=Node,RBAC \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI_DIR/sa.pub" \
        --service-account-signing-key-file="$PKI_DIR/sa.key" \
        --endpoint-reconciler-type=none \
        --allow-privileged=true --profiling=false \
        --cert-dir="$K8S_DIR/apiserver-certs" --v=1
    wait_healthy kube-apiserver 240 apiserver_ready

    write_kubeconfig admin "$K8S_DIR/admin.kubeconfig"
    write_kubeconfig kube-controller-manager "$K8S_DIR/kube-controller-manager.kubeconfig"
    write_kubeconfig kube-scheduler "$K8S_DIR/kube-scheduler.kubeconfig"
    write_kubeconfig kwok "$K8S_DIR/kwok.kubeconfig"

    local kcm_cfg="$K8S_DIR/kube-controller-manager.kubeconfig" sched_cfg="$K8S_DIR/kube-scheduler.kubeconfig"
    log "starting kube-controller-manager, kube-scheduler and kwok"
    start_bg kube-controller-manager "$kcm_cfg" "$K8S_BIN/kube-controller-manager" \
        --kubeconfig="$kcm_cfg" --authentication-kubeconfig="$kcm_cfg" --authorization-kubeconfig="$kcm_cfg" \
        --bind-address=127.0.0.1 --secure-port="$(recorded_port kube-controller-manager)" \
        --cert-dir="$K8S_DIR/kube-controller-manager-certs" \
        --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file="$PKI_DIR/sa.key" --root-ca-file="$PKI_DIR/ca.crt" \
        --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1
    start_bg kube-scheduler "$sched_cfg" "$K8S_BIN/kube-scheduler" \
        --kubeconfig="$sched_cfg" --authentication-kubeconfig="$sched_cfg" --authorization-kubeconfig="$sched_cfg" \
        --bind-address=127.0.0.1 --secure-port="$(recorded_port kube-scheduler)" \
        --cert-dir="$K8S_DIR/kube-scheduler-certs" \
        --leader-elect=false --profiling=false --v=1
    # kwok's built-in stages: node-initialize + node-heartbeat-with-lease for
    # nodes, pod-ready / pod-complete / pod-delete for pods (see development.md).
    start_bg kwok "$K8S_DIR/kwok.kubeconfig" "$KWOK_HOME/bin/kwok" \
        --kubeconfig="$K8S_DIR/kwok.kubeconfig" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --manage-nodes-with-label-selector= \
        --disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom \
        --disregard-status-with-label-selector= \
        --cidr="$POD_CIDR" --node-ip=127.0.0.1 \
        --node-lease-duration-seconds=40
    wait_healthy kube-controller-manager 120 component_healthy kube-controller-manager
    wait_healthy kube-scheduler 120 component_healthy kube-scheduler

    run_logged kwok apply_nodes
    wait_healthy kwok 120 nodes_ready

    log "installing the Gateway API $GATEWAY_API_VERSION standard CRDs"
    run_logged kube-apiserver kctl apply --server-side -f "$GATEWAY_API_HOME/crds/"
    log "installing Envoy Gateway $ENVOY_GATEWAY_VERSION's BackendTrafficPolicy CRD"
    run_logged kube-apiserver kctl apply --server-side -f "$ENVOY_GATEWAY_HOME/crds/"
    wait_healthy kube-apiserver 120 crds_established \
        gatewayclasses.gateway.networking.k8s.io gateways.gateway.networking.k8s.io \
        httproutes.gateway.networking.k8s.io grpcroutes.gateway.networking.k8s.io \
        referencegrants.gateway.networking.k8s.io backendtlspolicies.gateway.networking.k8s.io \
        backendtrafficpolicies.gateway.envoyproxy.io
    # Pods can be created in a namespace only once its default service account exists.
    wait_healthy kube-controller-manager 120 default_service_account_exists
}

k8s_env() {
    echo "export KUBECONFIG='$K8S_DIR/admin.kubeconfig'"
    echo "export PRAPI_KUBE_APISERVER='https://127.0.0.1:$(recorded_port kube-apiserver)'"
    echo "export PRAPI_KWOK_NODES='${KWOK_NODES[*]}'"
    echo "export PATH='$K8S_BIN':\"\$PATH\""
}
