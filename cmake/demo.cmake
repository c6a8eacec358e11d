# The README's main command: builds qlib's main example (preset `demo`) and runs it.
#
#   cmake -P cmake/demo.cmake                      # the synthetic heavy-tailed matrix
#   cmake -DARGS=/path/w.npy -P cmake/demo.cmake   # your own weights
cmake_minimum_required(VERSION 3.25)

get_filename_component(_source_dir "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(_demo quantize_report)
execute_process(COMMAND "${CMAKE_COMMAND}" --preset demo WORKING_DIRECTORY "${_source_dir}"
                COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build --preset demo --target ${_demo}
                WORKING_DIRECTORY "${_source_dir}" COMMAND_ERROR_IS_FATAL ANY)
message("")
execute_process(COMMAND "${_source_dir}/build/demo/examples/${_demo}" ${ARGS} COMMAND_ERROR_IS_FATAL ANY)
