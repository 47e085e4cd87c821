# `cmake --install`: the library, its public headers, a CMake package
# (find_package(pgjobq) gives the imported target pgjobq::pgjobq) and a
# pkg-config file. The `pgjobq` binary installs itself (cli/CMakeLists.txt).
# Included from the top-level CMakeLists.txt.
include(CMakePackageConfigHelpers)

set(PGJOBQ_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/pgjobq)

install(TARGETS pgjobq EXPORT pgjobqTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/pgjobq
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(EXPORT pgjobqTargets
  NAMESPACE pgjobq::
  DESTINATION ${PGJOBQ_CMAKE_DIR})

# A static library brings its private dependency (hiredis) to the final
# link; a shared one does not.
get_target_property(PGJOBQ_LIBRARY_TYPE pgjobq TYPE)
if(PGJOBQ_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  set(PGJOBQ_STATIC ON)
  set(PGJOBQ_PC_REQUIRES "libpq nlohmann_json hiredis")
  set(PGJOBQ_PC_REQUIRES_PRIVATE "")
else()
  set(PGJOBQ_STATIC OFF)
  set(PGJOBQ_PC_REQUIRES "libpq nlohmann_json")
  set(PGJOBQ_PC_REQUIRES_PRIVATE "hiredis")
endif()

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/pgjobqConfig.cmake.in
  ${PROJECT_BINARY_DIR}/pgjobqConfig.cmake
  INSTALL_DESTINATION ${PGJOBQ_CMAKE_DIR})
# 0.x: minor versions may break the API.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/pgjobqConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/pgjobqConfig.cmake
  ${PROJECT_BINARY_DIR}/pgjobqConfigVersion.cmake
  DESTINATION ${PGJOBQ_CMAKE_DIR})

# pgjobq.pc finds its prefix relative to itself, so it stays right under
# `cmake --install --prefix DIR` and when the tree is moved.
file(RELATIVE_PATH PGJOBQ_PC_TO_PREFIX
  ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" PGJOBQ_PC_TO_PREFIX "${PGJOBQ_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/pgjobq.pc.in
  ${PROJECT_BINARY_DIR}/pgjobq.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/pgjobq.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
