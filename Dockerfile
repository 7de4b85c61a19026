# syntax=docker/dockerfile:1
# Multi-stage: build a static binary, ship it alone on a distroless base,
# running as an unprivileged user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/authz-proxy ./cmd/authz-proxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/authz-proxy /usr/local/bin/authz-proxy
USER nonroot:nonroot
# The config must listen on 0.0.0.0:5000 (the default is 127.0.0.1:5000);
# metrics.addr 0.0.0.0:9090 serves /metrics, /healthz and /readyz.
EXPOSE 5000 9090
ENTRYPOINT ["/usr/local/bin/authz-proxy"]
CMD ["serve", "--config", "/etc/authz-proxy/config.yaml"]
