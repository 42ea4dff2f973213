# Debian packages: `cpack -G DEB` in the build directory makes one package
# per install component (CMakeLists.txt, "install"):
#   embedflow_VERSION-1_ARCH.deb         bin: the binary and what a host
#                                        running it needs
#   libembedflow0_VERSION-1_ARCH.deb     lib: the shared runtime
#   libembedflow-dev_VERSION-1_ARCH.deb  dev: building against it
# Library dependencies come from dpkg-shlibdeps (dpkg-dev); the
# maintainer scripts and conffiles of embedflow are deploy/debian/.
#
# The install prefix is /usr and the config /etc/embedflow, whatever the
# build was configured with: CPACK_SET_DESTDIR with CPACK_INSTALL_PREFIX
# makes CPack install with CMAKE_INSTALL_PREFIX=/usr under a DESTDIR, so
# the unit's ExecStart (cmake/install-system.cmake) names
# /usr/bin/embedflow. The first line of each description is its synopsis.

set(CPACK_PACKAGE_NAME embedflow)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "embedflow")
set(EF_DEB_MAINTAINER "embedflow maintainers <maintainers@embedflow.example>"
    CACHE STRING "Maintainer field of the Debian packages")
set(CPACK_PACKAGE_CONTACT "${EF_DEB_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_SET_DESTDIR ON)
set(CPACK_GENERATOR DEB)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL bin lib dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${EF_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The shared library's own package, so dpkg-shlibdeps can resolve what the
# binary of a package built on it needs.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_BIN_PACKAGE_NAME embedflow)
set(CPACK_DEBIAN_BIN_PACKAGE_SECTION database)
# postgresql: the private server of `run` and `demo` when no database is
# configured; tzdata: the time zones of cron jobs; systemd: sysusers and
# tmpfiles at install (without it postinst falls back to useradd).
set(CPACK_DEBIAN_BIN_PACKAGE_RECOMMENDS "postgresql, tzdata, systemd")
# `graph --png` and `bench --plot`.
set(CPACK_DEBIAN_BIN_PACKAGE_SUGGESTS "graphviz, gnuplot-nox")
set(CPACK_DEBIAN_BIN_DESCRIPTION
    "stream embeddings from gRPC into PostgreSQL, fast and without loss
embedflow receives embeddings over gRPC (UploadEmbeddings) or pulls them
from an AI server (GetEmbeddings), batches them and writes them to
PostgreSQL with upserts, acknowledging a stream only once every row is
settled: written, or kept in a dead-letter queue.
.
This package holds the embedflow binary, a systemd unit (not enabled:
configure /etc/embedflow/embedflow.yaml, then systemctl enable --now
embedflow), the embedflow system user, the man page and bash completion.")
set(CPACK_DEBIAN_BIN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/debian/conffiles
    ${CMAKE_SOURCE_DIR}/deploy/debian/postinst
    ${CMAKE_SOURCE_DIR}/deploy/debian/prerm
    ${CMAKE_SOURCE_DIR}/deploy/debian/postrm)

set(CPACK_DEBIAN_LIB_PACKAGE_NAME libembedflow${PROJECT_VERSION_MAJOR})
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_LIB_DESCRIPTION
    "embedflow's actor runtime, shared library
libembedflow runs actors joined by ZeroMQ links: configuration from YAML
and flags, lifecycle and drain, a byte budget, metrics and logging.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libembedflow-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The public headers include czmq.h; the static library needs the -dev
# packages that embedflow.pc names in Requires.private.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libembedflow${PROJECT_VERSION_MAJOR} (= ${PROJECT_VERSION}-1), libczmq-dev, libzmq3-dev, libfyaml-dev, libjansson-dev, libsystemd-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION
    "embedflow's actor runtime, development files
Headers, the static library, embedflow.pc and the CMake package
(find_package(embedflow)) for programs of their own actors.")

include(CPack)
