# The README's main command: builds qlib's main example (preset `demo`) and runs it: the
# Fashion-MNIST CNN in float and static int8 (examples/fashion_mnist.cpp).
#
#   cmake -P cmake/demo.cmake                          # shipped weights: calibrate, quantize, report
#   cmake -DARGS="--train;--epochs;12" -P cmake/demo.cmake   # train first (a few minutes)
cmake_minimum_required(VERSION 3.25)

get_filename_component(_source_dir "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(_demo fashion_mnist)
execute_process(COMMAND "${CMAKE_COMMAND}" --preset demo WORKING_DIRECTORY "${_source_dir}"
                COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build --preset demo --target ${_demo}
                WORKING_DIRECTORY "${_source_dir}" COMMAND_ERROR_IS_FATAL ANY)
message("")
execute_process(COMMAND "${_source_dir}/build/demo/examples/${_demo}" ${ARGS} COMMAND_ERROR_IS_FATAL ANY)
