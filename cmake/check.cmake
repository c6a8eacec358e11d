# The project's single test command: runs every CI workflow preset, then prints "N passed, M failed".
#
#   cmake -P cmake/check.cmake                         # all workflows, incremental
#   cmake -DFRESH=ON -P cmake/check.cmake              # reconfigure each from scratch
#   cmake -DWORKFLOWS="dev;aarch64" -P cmake/check.cmake # a subset
#
# Every workflow runs even if an earlier one fails; the script fails at the end if any did.
cmake_minimum_required(VERSION 3.25)  # workflow presets

if(NOT DEFINED WORKFLOWS)
  set(WORKFLOWS dev sanitize aarch64)
endif()
get_filename_component(_source_dir "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(_fresh)
if(FRESH)
  set(_fresh --fresh)
endif()

# Prints a line on stdout, where the workflows' own output goes too (message() uses stderr).
function(_say text)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E echo "${text}")
endfunction()

list(LENGTH WORKFLOWS _total)
set(_passed 0)
set(_failed_names)
set(_results)
set(_index 0)
string(TIMESTAMP _start_all "%s" UTC)
foreach(_wf IN LISTS WORKFLOWS)
  math(EXPR _index "${_index} + 1")
  _say("")
  _say("======================================================================")
  _say("== [${_index}/${_total}] workflow: ${_wf}")
  _say("======================================================================")
  string(TIMESTAMP _start "%s" UTC)
  execute_process(COMMAND "${CMAKE_COMMAND}" --workflow --preset "${_wf}" ${_fresh}
                  WORKING_DIRECTORY "${_source_dir}" RESULT_VARIABLE _rc)
  string(TIMESTAMP _end "%s" UTC)
  math(EXPR _secs "${_end} - ${_start}")
  if(_rc EQUAL 0)
    math(EXPR _passed "${_passed} + 1")
    list(APPEND _results "  ${_wf}: passed (${_secs} s)")
  else()
    list(APPEND _failed_names "${_wf}")
    list(APPEND _results "  ${_wf}: FAILED (${_rc}) (${_secs} s)")
  endif()
endforeach()
string(TIMESTAMP _end_all "%s" UTC)
math(EXPR _secs_all "${_end_all} - ${_start_all}")

list(LENGTH _failed_names _failed)
_say("")
_say("== check summary (${_secs_all} s)")
foreach(_line IN LISTS _results)
  _say("${_line}")
endforeach()
_say("${_passed} passed, ${_failed} failed")
if(_failed GREATER 0)
  message(FATAL_ERROR "workflows failed: ${_failed_names}")
endif()
