# The man page and the Debian package: `cpack -G DEB` in a build directory gives
# chatcap_VERSION_ARCH.deb with /usr/sbin/chatcap, the systemd unit, /etc/chatcap/chatcap.conf
# (a conffile: an operator's edits survive upgrades) and chatcap.8, the man page made from
# chatcap's own --help text (packaging/make_man.py, with Debian's help2man).

find_program(CHATCAP_HELP2MAN help2man)
find_program(CHATCAP_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(CHATCAP_HELP2MAN AND CHATCAP_PYTHON3)
  add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/chatcap.8.gz
    COMMAND ${CHATCAP_PYTHON3} ${PROJECT_SOURCE_DIR}/packaging/make_man.py $<TARGET_FILE:chatcap>
            ${PROJECT_BINARY_DIR}/chatcap.8
    COMMAND gzip -9nf ${PROJECT_BINARY_DIR}/chatcap.8
    DEPENDS chatcap ${PROJECT_SOURCE_DIR}/packaging/make_man.py
    COMMENT "chatcap.8 from chatcap --help (help2man)")
  add_custom_target(chatcap_man ALL DEPENDS ${PROJECT_BINARY_DIR}/chatcap.8.gz)
  install(FILES ${PROJECT_BINARY_DIR}/chatcap.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
else()
  message(STATUS "help2man not found: no man page (scripts/install-deps installs it)")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME chatcap)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "chatcap developers <chatcap@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "passive recorder of LLM API traffic: which request killed the server")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
  "chatcap watches loopback with libpcap, reassembles TCP, parses HTTP/1.x and\n Server-Sent-Events, and keeps the last N chat-completion exchanges of an\n OpenAI-compatible server (vLLM) on disk, each request written the moment it is\n complete. When the server dies it names the request that killed it.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends from the libraries the binary links
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS systemd)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # the package carries no debug info
# The config is installed by install(CODE) under /etc: dpkg keeps an edited one (conffile).
file(WRITE ${PROJECT_BINARY_DIR}/packaging/conffiles "/etc/chatcap/chatcap.conf\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/packaging/conffiles)
include(CPack)
