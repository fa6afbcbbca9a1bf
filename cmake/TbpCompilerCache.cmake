# Use ccache for every compile when it is installed; on 2 cores it is what keeps rebuilds cheap.
find_program(TBP_CCACHE ccache)
if(TBP_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${TBP_CCACHE}" CACHE STRING "" FORCE)
  message(STATUS "tbp: using ccache (${TBP_CCACHE})")
endif()
