from vcorner.cli import main

main()
