# Local stand-ins for gcr.io/distroless/static-debian12:nonroot (target
# static) and gcr.io/distroless/base-debian12:nonroot (target base) on build
# hosts that cannot pull from a registry. Both hold only what a Go binary
# needs at run time: passwd/group entries for root, nobody and nonroot
# (65532), CA certificates, time zones and a world-writable /tmp; base adds
# Debian's glibc (libc6) and libgcc-s1 for binaries built with cgo.
ARG DEBIAN_IMAGE=flip-local/debian:bookworm
FROM ${DEBIAN_IMAGE} AS rootfs
RUN set -eu; \
	mkdir -p /out/etc/ssl/certs /out/tmp /out/home/nonroot /out/usr/share /out/var/lib; \
	chmod 1777 /out/tmp; chown 65532:65532 /out/home/nonroot; \
	printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
		'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >/out/etc/passwd; \
	printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >/out/etc/group; \
	echo 'hosts: files dns' >/out/etc/nsswitch.conf; \
	cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
	cp -a /usr/share/zoneinfo /out/usr/share/; \
	mkdir -p /glibc; ln -s usr/lib /glibc/lib; ln -s usr/lib64 /glibc/lib64; mkdir -p /glibc/usr/lib /glibc/usr/lib64; \
	dpkg -L libc6 libgcc-s1 | grep -v -e '^/usr/share' -e '^/etc' -e '^/\.$' -e '/gconv' -e '^/usr/bin' -e '^/usr/sbin' -e '^/sbin' \
		| tar --no-recursion -C / -cf - -T - | tar -C /glibc --keep-directory-symlink -xf -

FROM scratch AS static
COPY --from=rootfs /out/ /
USER 65532:65532
WORKDIR /home/nonroot

FROM static AS base
COPY --from=rootfs /glibc/ /
