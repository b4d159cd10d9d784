// chatcap: a passive recorder of LLM API traffic. Everything is in the stages; main only
// hands argv to the command line.
#include "chatcap/cli.hpp"

int main(int argc, char** argv) { return chatcap::run_cli(argc, argv); }
