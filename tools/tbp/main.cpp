// The tbp command: hands argv to the driver (DESIGN.md §2).
#include "tbp/driver/Driver.h"

int main(int argc, char** argv) { return tbp::driver::main(argc, argv); }
