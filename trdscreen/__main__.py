from trdscreen.cli import main

main()
