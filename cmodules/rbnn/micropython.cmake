# rbnn C module for MicroPython's CMake-based ports (rp2, esp32).
# Included from ../micropython.cmake; build with USER_C_MODULES=<this repo>/cmodules/micropython.cmake
add_library(usermod_rbnn INTERFACE)

# The binding and the portable C core it wraps (inference, kernel, training step).
target_sources(usermod_rbnn INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/modrbnn.c
    ${CMAKE_CURRENT_LIST_DIR}/rbnn_core.c
    ${CMAKE_CURRENT_LIST_DIR}/rbnn_kernel.c
    ${CMAKE_CURRENT_LIST_DIR}/rbnn_train.c
)

target_include_directories(usermod_rbnn INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
)

# Ports build for size; the inference and training loops are worth -O2 (last -O wins).
set_source_files_properties(
    ${CMAKE_CURRENT_LIST_DIR}/rbnn_core.c
    ${CMAKE_CURRENT_LIST_DIR}/rbnn_kernel.c
    ${CMAKE_CURRENT_LIST_DIR}/rbnn_train.c
    PROPERTIES COMPILE_OPTIONS "-O2"
)

target_link_libraries(usermod INTERFACE usermod_rbnn)
