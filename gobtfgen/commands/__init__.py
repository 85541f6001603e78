"""One module per subcommand: register(subparsers) adds its flags, run(args) does the work."""
