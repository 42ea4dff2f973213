# Run by `cmake --install` (install(SCRIPT), component embedflow): puts the
# systemd unit, its sysusers.d and tmpfiles.d snippets and the example
# config in place. It runs at install time, not at configure time, so the
# unit's ExecStart names the binary where this install puts it:
# `--prefix DIR` and CPack's staging (CPACK_SET_DESTDIR, prefix /usr) see
# the prefix they install to. Set by install(CODE) before it:
#   EF_DEPLOY_DIR   the source tree's deploy/
#   EF_STAGE_DIR    a directory of the build for the configured unit
#   EF_BINDIR       CMAKE_INSTALL_BINDIR (relative to the prefix or absolute)
#
# The config goes where GNUInstallDirs puts a sysconfdir: /etc for the
# prefix /usr (a package), PREFIX/etc otherwise. The snippets and the unit
# go to PREFIX/lib/{systemd/system,sysusers.d,tmpfiles.d}, which systemd
# reads for /usr and /usr/local alike.

if(IS_ABSOLUTE "${EF_BINDIR}")
  set(EF_UNIT_BINDIR "${EF_BINDIR}")
else()
  set(EF_UNIT_BINDIR "${CMAKE_INSTALL_PREFIX}/${EF_BINDIR}")
endif()
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(EF_UNIT_SYSCONFDIR "/etc")
else()
  set(EF_UNIT_SYSCONFDIR "${CMAKE_INSTALL_PREFIX}/etc")
endif()

configure_file("${EF_DEPLOY_DIR}/embedflow.service.in"
               "${EF_STAGE_DIR}/embedflow.service" @ONLY)
# file(INSTALL) adds $DESTDIR to these absolute destinations and records
# each file in install_manifest.txt, as install(FILES) would.
file(INSTALL "${EF_STAGE_DIR}/embedflow.service"
     DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
file(INSTALL "${EF_DEPLOY_DIR}/embedflow.sysusers.conf"
     DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/sysusers.d"
     RENAME embedflow.conf)
file(INSTALL "${EF_DEPLOY_DIR}/embedflow.tmpfiles.conf"
     DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/tmpfiles.d"
     RENAME embedflow.conf)
# An existing config is the operator's: a second install keeps it (dpkg
# does the same for the package's conffile).
set(config "${EF_UNIT_SYSCONFDIR}/embedflow/embedflow.yaml")
if(EXISTS "$ENV{DESTDIR}${config}")
  message(STATUS "Keeping: $ENV{DESTDIR}${config} (the example is "
                 "${EF_DEPLOY_DIR}/embedflow.yaml)")
else()
  file(INSTALL "${EF_DEPLOY_DIR}/embedflow.yaml"
       DESTINATION "${EF_UNIT_SYSCONFDIR}/embedflow")
endif()
