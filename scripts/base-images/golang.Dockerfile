# Local stand-in for golang:1.26-bookworm on build hosts that cannot pull from
# a registry: the Debian base made by scripts/base-images.sh, the C toolchain
# cgo needs, the host's Go toolchain (GOROOT) and CA bundle sent in the build
# context.
ARG DEBIAN_IMAGE=flip-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
	&& rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY go /usr/local/go
# The build host's CA bundle, so that a site's TLS-inspecting proxy in front
# of the Go module proxy is trusted as it is on the host.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GOTOOLCHAIN=local GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
