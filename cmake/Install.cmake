# cmake --install: libraries, headers, a CMake package (find_package(withcache)
# → withcache::withcache, withcache::withcache_c, …) and withcache.pc.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS withcache_url withcache_json withcache_client withcache_transfer withcache withcache_c
  EXPORT withcacheTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/libwithcache/include/withcache
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/libwithcache/include/withcache/version.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/withcache)

install(EXPORT withcacheTargets NAMESPACE withcache:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/withcache)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/withcacheConfig.cmake.in
  ${PROJECT_BINARY_DIR}/withcacheConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/withcache)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/withcacheConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/withcacheConfig.cmake ${PROJECT_BINARY_DIR}/withcacheConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/withcache)

file(RELATIVE_PATH WITHCACHE_PC_TO_PREFIX "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/withcache.pc.in ${PROJECT_BINARY_DIR}/withcache.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/withcache.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
