from rulesd.cli import main

main()
