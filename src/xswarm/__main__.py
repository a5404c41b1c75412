from xswarm.cli import main

main()
