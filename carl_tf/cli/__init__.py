"""The command-line programs: flags mapped to one library call, errors mapped to exit codes."""
