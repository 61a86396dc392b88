from sandbox.runner import main

main()
