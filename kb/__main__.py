from kb.cli.commands import main

main()
