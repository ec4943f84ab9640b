from wildreid.cli.main import main

main()
