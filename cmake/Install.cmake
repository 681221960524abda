# cmake --install: libraries, headers, a CMake package and withcache.pc.
#   find_package(withcache COMPONENTS client) → withcache::client (shared; needs only OpenSSL at run time)
#   find_package(withcache)                   → also the static server-side modules (withcache::withcache,
#                                                withcache::store, ::fills, ::origin, ::shim, …) and the C ABI
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(WITHCACHE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/withcache)

# The client library: its runtime in the withcache-shim package (withcache-client needs it), the link
# name and headers for developers.
install(TARGETS withcache_client EXPORT withcacheClientTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT shim NAMELINK_COMPONENT dev
  FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(EXPORT withcacheClientTargets NAMESPACE withcache:: DESTINATION ${WITHCACHE_CMAKE_DIR} COMPONENT dev)

install(TARGETS withcache_util withcache_digest withcache_url withcache_http withcache_json withcache_probe
                withcache_origin withcache_shim withcache_store withcache_fills withcache_auth withcache
                withcache_c
  EXPORT withcacheTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
  FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT withcacheTargets NAMESPACE withcache:: DESTINATION ${WITHCACHE_CMAKE_DIR} COMPONENT dev)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/withcacheConfig.cmake.in
  ${PROJECT_BINARY_DIR}/withcacheConfig.cmake INSTALL_DESTINATION ${WITHCACHE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/withcacheConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/withcacheConfig.cmake ${PROJECT_BINARY_DIR}/withcacheConfigVersion.cmake
  DESTINATION ${WITHCACHE_CMAKE_DIR} COMPONENT dev)

file(RELATIVE_PATH WITHCACHE_PC_TO_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/withcache.pc.in ${PROJECT_BINARY_DIR}/withcache.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/withcache.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# CPack: two Debian packages, withcache-server (server + systemd unit) and
# withcache-shim (curlwithcache/wgetwithcache, withcache-client and its library, profile.d hook).
#   cd build/release && cpack -G DEB
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME withcache)
set(CPACK_PACKAGE_VENDOR "withcache")
set(CPACK_PACKAGE_CONTACT "withcache maintainers <maintainers@withcache.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL server shim)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_SERVER_PACKAGE_NAME withcache-server)
set(CPACK_DEBIAN_SERVER_DESCRIPTION "withcache cache-host: serves cached vendor downloads to curl and wget")
set(CPACK_DEBIAN_SHIM_PACKAGE_NAME withcache-shim)
set(CPACK_DEBIAN_SHIM_DESCRIPTION "curlwithcache/wgetwithcache shim and withcache-client")
set(CPACK_STRIP_FILES ON)
include(CPack)
