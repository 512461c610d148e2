# syntax=docker/dockerfile:1
# sluice: one image for `sluice proxy` (and later `control`, the webhook).
# Node 24 runs the TypeScript sources directly (type stripping), so there is no build output to
# copy: the deps stage installs production dependencies only, the final stage adds the sources.
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Resilience sidecar: deadlines, retry budgets, backpressure" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY src ./src
COPY config ./config
# The image's `node` user (uid 1000); the sidecar needs no privileges.
USER node
EXPOSE 15001 15006 15000
# Admin is loopback-only, which is where the container's own healthcheck runs.
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:15000/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# sluice handles SIGTERM itself (drain, then exit 0), so node may be PID 1 directly.
ENTRYPOINT ["node", "src/main.ts"]
CMD ["proxy"]
