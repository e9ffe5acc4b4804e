#!/usr/bin/env bash
# update_k8s.sh: upgrade kubeadm, kubelet and kubectl on THIS node to one Kubernetes release.
#
# Sent by k8s-upgrade-chain as the stdin of a remote `sudo bash -s -- ARGS` after it drained
# the node; the chain uncordons and checks readiness afterwards. This script never talks to
# the API server (no kubectl).
#
# Idempotent: a re-run on a node already at the release changes nothing (package installs,
# kubeadm and the kubelet restart are skipped when already done), and a re-run after a
# failure resumes where the first run stopped.
#
# Environment (for tests; production leaves them unset):
#   UPDATE_K8S_ROOT         prefix for every file path below (default: empty, i.e. /)
#   K8S_APT_BASE            apt repo base when --apt-base is not given
#   UPDATE_K8S_RETRY_DELAY  seconds between `kubeadm upgrade apply` attempts (default 30)
#   KUBELET_CONFIG          kubelet config (default $UPDATE_K8S_ROOT/var/lib/kubelet/config.yaml)
set -euo pipefail

PROG=update_k8s.sh
ROOT="${UPDATE_K8S_ROOT:-}"
APT_BASE="${K8S_APT_BASE:-https://pkgs.k8s.io/core:/stable:}"
RETRY_DELAY="${UPDATE_K8S_RETRY_DELAY:-30}"
KUBELET_CONFIG="${KUBELET_CONFIG:-$ROOT/var/lib/kubelet/config.yaml}"
SOURCES_LIST="$ROOT/etc/apt/sources.list.d/kubernetes.list"
KEYRING_NAME=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
KEYRING="$ROOT$KEYRING_NAME"
APISERVER_MANIFEST="$ROOT/etc/kubernetes/manifests/kube-apiserver.yaml"
LOCK_FILE="$ROOT/run/lock/update_k8s.lock"
PACKAGES=(kubeadm kubelet kubectl)
# Same list for plan and apply: once the new kubeadm is installed, plan fails the CoreDNS
# preflight too (seed history bfb86e65, 037a609f).
IGNORE_PREFLIGHT=--ignore-preflight-errors=CoreDNSMigration,CoreDNSUnsupportedPlugins
export DEBIAN_FRONTEND=noninteractive
# Keep our config files on package upgrades instead of prompting (there is no one to answer).
APT_INSTALL_OPTS=(-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

usage() {
	cat <<EOF
Usage: $PROG --role ROLE --release X.Y.Z [--preserve-kubelet-keys KEY[,KEY...]]
                     [--apt-base URL]

Upgrade kubeadm, kubelet and kubectl on this node to Kubernetes X.Y.Z.

  --role ROLE                  master: the first control plane (kubeadm upgrade apply)
                               control-plane: another control plane (kubeadm upgrade
                               node, CoreDNS addon skipped)
                               worker: a worker (kubeadm upgrade node)
  --release X.Y.Z              the target release
  --preserve-kubelet-keys KEYS top-level keys of /var/lib/kubelet/config.yaml to keep as
                               they were before kubeadm rewrote the file (comma-separated,
                               repeatable), e.g. systemReserved,kubeReserved
  --apt-base URL               Kubernetes apt repo base, the track is appended as
                               /vX.Y/deb/ (default https://pkgs.k8s.io/core:/stable:)
  -h, --help                   show this help

Exit status: 0 done (or nothing to do), 1 failed, 2 usage error.
EOF
}

usage_error() {
	echo "$PROG: $1" >&2
	usage >&2
	exit 2
}

log() { echo "$PROG: $*"; }

run() {
	log "+ $*"
	"$@"
}

# Installed upstream version of a package (Debian revision stripped), or empty.
installed_version() {
	local v
	# shellcheck disable=SC2016 # ${Version} is a dpkg-query field, not a shell expansion.
	v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true)
	echo "${v%%-*}"
}

at_release() { [[ $(installed_version "$1") == "$release" ]]; }

# True when the API server static pod already runs the release (kubeadm apply done).
control_plane_at_release() {
	[[ -f $APISERVER_MANIFEST ]] || return 1
	awk -v want="kube-apiserver:v$release" '
		$1 == "image:" || $1 == "-" && $2 == "image:" {
			img = ($1 == "image:") ? $2 : $3
			n = split(img, parts, "/")
			if (parts[n] == want) found = 1
		}
		END { exit !found }' "$APISERVER_MANIFEST"
}

# Lines of top-level KEY in a YAML file written by kubeadm (key at column 0, its value
# indented or as "- " list items at column 0).
yaml_block() {
	awk -v key="$1:" '
		/^[^[:space:]#-]/ || /^---/ { inblk = (index($0, key) == 1) }
		inblk { print }' "$2"
}

yaml_without_block() {
	awk -v key="$1:" '
		/^[^[:space:]#-]/ || /^---/ { inblk = (index($0, key) == 1) }
		!inblk { print }' "$2"
}

# Everything runs inside main, called with stdin from /dev/null: bash has then read the whole
# script (it arrives on stdin) before the first command runs, and no command (a dpkg prompt,
# say) can swallow the rest of the script as its input.
main() {
	role=""
	release=""
	preserve_keys=()
	while (($# > 0)); do
		case "$1" in
		--role | --release | --preserve-kubelet-keys | --apt-base)
			(($# >= 2)) || usage_error "$1 needs a value"
			opt=$1
			val=$2
			shift 2
			;;
		--role=* | --release=* | --preserve-kubelet-keys=* | --apt-base=*)
			opt=${1%%=*}
			val=${1#*=}
			shift
			;;
		-h | --help)
			usage
			exit 0
			;;
		*) usage_error "unknown argument: $1" ;;
		esac
		case "$opt" in
		--role) role=$val ;;
		--release) release=$val ;;
		--apt-base)
			[[ $val =~ ^https?://[^[:space:]]+$ ]] ||
				usage_error "--apt-base must be an http(s) URL, got '$val'"
			APT_BASE=${val%/}
			;;
		--preserve-kubelet-keys)
			[[ $val =~ ^[A-Za-z][A-Za-z0-9]*(,[A-Za-z][A-Za-z0-9]*)*$ ]] ||
				usage_error "--preserve-kubelet-keys: expected KEY[,KEY...], got '$val'"
			IFS=, read -r -a more <<<"$val"
			preserve_keys+=("${more[@]}")
			;;
		esac
	done

	case "$role" in
	master | control-plane | worker) ;;
	"") usage_error "--role is required" ;;
	*) usage_error "--role must be master, control-plane or worker, got '$role'" ;;
	esac
	[[ -n $release ]] || usage_error "--release is required"
	[[ $release =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage_error "--release must be X.Y.Z, got '$release'"
	track=${release%.*}

	# One run at a time per node: a run whose SSH session timed out or dropped keeps going on
	# the node, and a retried Job must not start a second apt/kubeadm next to it.
	mkdir -p "$(dirname "$LOCK_FILE")"
	exec 9>>"$LOCK_FILE"
	if ! flock -n 9; then
		log "another update_k8s.sh is still running on this node (lock $LOCK_FILE); not starting"
		exit 1
	fi

	changed=0
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT

	log "role=$role release=$release track=v$track"

	# 1. apt source and keyring for the release's minor track.
	want_source="deb [signed-by=$KEYRING_NAME] $APT_BASE/v$track/deb/ /"
	mkdir -p "$(dirname "$SOURCES_LIST")" "$(dirname "$KEYRING")"
	if [[ ! -f $SOURCES_LIST || $(<"$SOURCES_LIST") != "$want_source" ]]; then
		printf '%s\n' "$want_source" >"$SOURCES_LIST"
		log "apt source set to $want_source"
	fi
	# -L: pkgs.k8s.io answers with a redirect (seed history cecd9fe2).
	run curl -fsSL --retry 3 -o "$tmp/Release.key" "$APT_BASE/v$track/deb/Release.key"
	run gpg --batch --yes --dearmor -o "$tmp/keyring.gpg" "$tmp/Release.key"
	if ! cmp -s "$tmp/keyring.gpg" "$KEYRING"; then
		install -m 0644 "$tmp/keyring.gpg" "$KEYRING"
		log "apt keyring for v$track updated"
	fi

	# 2. Packages not yet at the release: unhold them and refresh the index.
	pending=()
	for p in "${PACKAGES[@]}"; do
		at_release "$p" || pending+=("$p")
	done
	if ((${#pending[@]} > 0)); then
		run apt-mark unhold "${pending[@]}"
		run apt-get update
	else
		log "kubeadm, kubelet and kubectl already at $release"
	fi

	if ! at_release kubeadm; then
		run apt-get install -y "${APT_INSTALL_OPTS[@]}" "kubeadm=$release-*"
	fi

	# 3. kubeadm. Keep the kubelet config as it was before the first kubeadm run for this
	# release: `kubeadm upgrade` rewrites it from the kubelet-config ConfigMap and drops
	# node-local tuning (seed history, 1.35.7 run). The copy survives a failed run so a re-run
	# restores from the original, not from kubeadm's rewrite.
	backup="$KUBELET_CONFIG.before-v$release"
	kubeadm_ran=0
	save_kubelet_config() {
		if [[ -f $KUBELET_CONFIG && ! -f $backup ]]; then
			cp -p "$KUBELET_CONFIG" "$backup"
			log "saved $KUBELET_CONFIG to $backup"
		fi
	}
	if [[ $role == master ]]; then
		if control_plane_at_release; then
			log "control plane already at v$release; skipping kubeadm upgrade apply"
		else
			save_kubelet_config
			# The explicit version matters: without it kubeadm only proposes patches of its
			# current minor (seed history 566447a6).
			run kubeadm upgrade plan "v$release" "$IGNORE_PREFLIGHT"
			ok=0
			for attempt in 1 2 3; do
				args=(upgrade apply "v$release" -y "$IGNORE_PREFLIGHT" --skip-phases=addon/coredns)
				# A retry must not wait for an etcd static-pod hash change that never comes
				# when the etcd manifest is unchanged (seed history 2dc7e001, 4713c3a6).
				if ((attempt > 1)); then
					args+=(--etcd-upgrade=false)
				fi
				if run kubeadm "${args[@]}"; then
					ok=1
					break
				fi
				log "kubeadm upgrade apply failed (attempt $attempt of 3)"
				if ((attempt < 3)); then
					sleep "$RETRY_DELAY"
				fi
			done
			if ((ok == 0)); then
				log "kubeadm upgrade apply failed 3 times; giving up"
				exit 1
			fi
			kubeadm_ran=1
		fi
	else
		# The kubelet package is installed after `kubeadm upgrade node`, so a kubelet at the
		# release means this step completed in an earlier run.
		if at_release kubelet; then
			log "kubelet already at $release; skipping kubeadm upgrade node"
		else
			save_kubelet_config
			if [[ $role == control-plane ]]; then
				# Current kubeadm's `upgrade node` has an addon phase that upgrades CoreDNS from
				# a control plane: the same drifted-CoreDNS hazard as apply (seed history
				# 037a609f). Workers have no addon work, so they get the plain command.
				run kubeadm upgrade node "$IGNORE_PREFLIGHT" --skip-phases=addon/coredns
			else
				run kubeadm upgrade node
			fi
			kubeadm_ran=1
		fi
	fi

	if ((kubeadm_ran == 1)) && [[ -f $backup && -f $KUBELET_CONFIG ]]; then
		if cmp -s "$backup" "$KUBELET_CONFIG"; then
			log "kubeadm left $KUBELET_CONFIG unchanged"
		else
			log "kubeadm changed $KUBELET_CONFIG:"
			diff -u "$backup" "$KUBELET_CONFIG" || true
		fi
	fi

	# 4. Restore the node-local keys from the saved copy (a key absent before is removed).
	if ((${#preserve_keys[@]} > 0)) && [[ -f $backup && -f $KUBELET_CONFIG ]]; then
		cp -p "$KUBELET_CONFIG" "$tmp/restored.yaml"
		for key in "${preserve_keys[@]}"; do
			if [[ $(yaml_block "$key" "$backup") != "$(yaml_block "$key" "$tmp/restored.yaml")" ]]; then
				yaml_without_block "$key" "$tmp/restored.yaml" >"$tmp/next.yaml"
				yaml_block "$key" "$backup" >>"$tmp/next.yaml"
				cat "$tmp/next.yaml" >"$tmp/restored.yaml"
				log "restored kubelet config key $key"
			fi
		done
		if ! cmp -s "$tmp/restored.yaml" "$KUBELET_CONFIG"; then
			diff -u "$KUBELET_CONFIG" "$tmp/restored.yaml" || true
			cat "$tmp/restored.yaml" >"$KUBELET_CONFIG"
			changed=1
		fi
	fi
	if ((kubeadm_ran == 1)); then
		changed=1
	fi

	# 5. kubelet and kubectl, then hold all three.
	later=()
	for p in kubelet kubectl; do
		at_release "$p" || later+=("$p=$release-*")
	done
	if ((${#later[@]} > 0)); then
		run apt-get install -y "${APT_INSTALL_OPTS[@]}" "${later[@]}"
		changed=1
	fi
	held=$(apt-mark showhold)
	unheld=()
	for p in "${PACKAGES[@]}"; do
		[[ $'\n'$held$'\n' == *$'\n'$p$'\n'* ]] || unheld+=("$p")
	done
	if ((${#unheld[@]} > 0)); then
		run apt-mark hold "${unheld[@]}"
	fi

	# 6. Restart the kubelet onto the new binary and config.
	if ((changed == 1)); then
		run systemctl daemon-reload
		run systemctl restart kubelet
	else
		log "nothing changed; kubelet not restarted"
	fi
	log "Done: node at $release (role $role)"
	echo "Done"
}

main "$@" </dev/null
