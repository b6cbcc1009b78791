#!/usr/bin/env bash
# Make Docker usable on a fresh Debian machine without a registry or a bridge:
#   - install docker.io and debootstrap when missing,
#   - start dockerd with the bridge and iptables off when no daemon answers,
#   - build the local base image local/debian-ansible:bookworm when missing.
# Safe to run again: every step checks first.
set -euo pipefail

IMAGE="${WGOPS_BASE_IMAGE:-local/debian-ansible:bookworm}"
log() { printf '[docker-setup] %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "no Docker daemon answers: starting dockerd (no bridge, no iptables)"
  mkdir -p /var/log
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/wgops-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/wgops-dockerd.log"; exit 1; }
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "building $IMAGE with debootstrap (about a minute)"
  rootfs=$(mktemp -d /var/tmp/wgops-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,sudo bookworm "$rootfs" >/dev/null
  tar -C "$rootfs" -c . | docker import - "$IMAGE" >/dev/null
fi
log "ready: $(docker version --format '{{.Server.Version}}') with image $IMAGE"
