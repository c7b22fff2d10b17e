# syntax=docker/dockerfile:1
# Build: docker build -t gateway .            (NATS reachable as "nats", as in the spec's compose file)
#        docker build --build-arg GATEWAY_NATS_HOSTS=nats-a,nats-b -t gateway .
FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY lib/ lib/
COPY scripts/ scripts/
RUN deno install --frozen --entrypoint main.ts lib/cluster/worker.ts
# Hosts this image's binary may reach besides localhost (build-time scope, lib/config/permissions.ts).
ARG GATEWAY_NATS_HOSTS=nats
RUN GATEWAY_NATS_HOSTS="${GATEWAY_NATS_HOSTS}" GATEWAY_COMPILE_OUTPUT=/src/dist/gateway deno task compile

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/dist/gateway /usr/local/bin/gateway
ENV NATS_URL=nats://nats:4222 \
    PORT=8000 \
    GATEWAY_HOST=0.0.0.0
EXPOSE 8000
USER nonroot
# Liveness, not readiness: during a NATS outage the gateway is alive and reconnecting (it exits 1
# by itself after GATEWAY_NATS_MAX_OUTAGE_MS); an orchestrator restarting it would not help.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/gateway", "--live-check"]
ENTRYPOINT ["/usr/local/bin/gateway"]
