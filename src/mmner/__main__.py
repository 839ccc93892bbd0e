from mmner.cli import main

main()
