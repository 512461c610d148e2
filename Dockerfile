# syntax=docker/dockerfile:1
# sluice: one image for `sluice proxy` (the sidecar), `sluice control` (the config service) and the
# webhook. Three stages: `build` compiles TypeScript, `deps` installs the production dependencies,
# and the last one holds only what runs. test/integration/production-install.test.ts performs these
# steps without Docker and runs the result, so keep its small parser in step when this file changes.
#
# Size, linux/amd64, added up layer by layer (no Docker daemon where it was written):
#   node:24.21.0-trixie-slim                       ~235 MB  (81 MB compressed, as Docker Hub lists 24.20.0)
#   git, openssh-client, ca-certificates, tini     ~110 MB  (36 MB; measured in a trixie chroot: perl is
#                                                             half of it, and git needs perl)
#   node_modules, production only, pruned           16 MB   (3 MB)
#   dist, config, src/proto, status page            1 MB
#   total                                         ~360 MB on disk, ~120 MB to pull
# The sidecar alone would not need git (~110 MB); one image for every command is the choice for now.

# An exact tag, so a rebuild gets the Node the tests ran on (the `node` devDependency is the same
# release). For a byte-for-byte reproducible base, add the digest the registry reports for it:
#   docker buildx imagetools inspect node:24.21.0-trixie-slim
#   docker build --build-arg NODE_IMAGE=node:24.21.0-trixie-slim@sha256:<digest> .
# trixie (Debian 13) rather than bookworm: it is Debian's stable release, bookworm is in LTS.
ARG NODE_IMAGE=node:24.21.0-trixie-slim

# Compile TypeScript to JavaScript. Node 24 could run the .ts sources directly, but its type
# stripper costs ~20 MiB of resident memory per process, and a sidecar runs in every pod.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the only install scripts in the tree are the `node` devDependency's, which
# downloads a second Node binary (the image has one), and protobufjs's, which only prints a warning.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies only. Nothing but node_modules leaves this stage, so npm's cache stays here.
# Type declarations, source maps and READMEs are never loaded at run time (-11 MB); licences stay.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o \( -name '*.md' ! -iname 'licen[cs]e*' \) \) -delete

FROM ${NODE_IMAGE}
# git, ssh and CA certificates: `sluice control` follows the policy repository with the git CLI,
# over https or ssh. tini: see ENTRYPOINT. apt packages are not pinned: Debian keeps only the
# latest of each in a stable release, so a pin would break the build at the next security update.
# npm, npx, corepack and yarn come with the base image and are removed: nothing installs at run
# time, and scanners would report their dependencies as the image's (this saves no bytes: they
# stay in the base layer).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates openssh-client tini \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack /opt/yarn-v* \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and read-only to the process: the sidecar cannot rewrite its own code.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Read at start for the version (`--version`, the control hello, the fleet view).
COPY package.json ./
# The embedded default policy (config/sluice.yaml), its JSON Schema and the examples.
COPY config ./config
# The push protocol's contract, read by `sluice control` and `sluice proxy --control` at start.
COPY src/proto ./src/proto
# The config service's status page: static HTML, CSS and JS, served as they are (no build step).
COPY src/control/status-page ./src/control/status-page
# The base image's `node` user, by number: Kubernetes' runAsNonRoot can only verify a numeric
# user, and refuses to start a container whose image names one (`USER node`).
USER 1000:1000
# Traffic: outbound 15001, inbound 15006 (sluice proxy); gRPC 15012 and the fleet API 15014
# (sluice control). The admin port, 15000, listens on 127.0.0.1 only and is not exposed.
EXPOSE 15001 15006 15012 15014
# Docker's own check; Kubernetes ignores it and uses the pod's probes. Healthy when the proxy's
# admin (SLUICE_ADMIN_PORT, default 15000) or control's API (15014) answers /healthz, so the one
# image is healthy whichever command it runs; SLUICE_HEALTHCHECK_URL replaces both.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const e=process.env;const urls=e.SLUICE_HEALTHCHECK_URL?[e.SLUICE_HEALTHCHECK_URL]:['http://127.0.0.1:'+(e.SLUICE_ADMIN_PORT||15000)+'/healthz','http://127.0.0.1:15014/healthz'];Promise.any(urls.map(u=>fetch(u,{signal:AbortSignal.timeout(2000)}).then(r=>{if(!r.ok)throw new Error(u+': '+r.status)}))).then(()=>process.exit(0),()=>process.exit(1))"]
# tini is PID 1 and node its child. sluice drains on SIGTERM itself (readiness fails, in-flight
# requests finish, exit 0); tini passes the signal on and exits with node's code. Why not node as
# PID 1: `sluice control` runs git, and when git exits before a transport it started (ssh,
# git-remote-https), or dies with its process group on a timeout, that grandchild is re-parented
# to PID 1. node never waits for processes it did not spawn, so each one would stay a zombie,
# a PID slot held until the container restarts (in a PID namespace: 5 orphans of 5 stayed zombies
# under node as PID 1, none under tini). Killing process groups ends such a grandchild; it does not
# reap it. Also, a SIGTERM that arrives before node has installed its handler kills node under
# tini; node as PID 1 ignored one sent 50 ms after start, and would wait for SIGKILL.
# -s: tini registers as a subreaper, so it still reaps when it is not PID 1 (`docker run --init`).
# An 8 MiB semi-space caps V8's young generation: ~170 instead of ~230 MiB peak RSS under load,
# no measurable CPU cost (bench/README.md). NODE_OPTIONS can still add e.g. --max-old-space-size.
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "node", "--max-semi-space-size=8", "dist/main.js"]
CMD ["proxy"]

# Last, so a new revision changes only the image's metadata, not the cached layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/sluice-dev/sluice
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Resilience sidecar: deadlines, retry budgets, backpressure; and its config service" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
