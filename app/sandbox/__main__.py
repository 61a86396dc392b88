from app.sandbox.runner import main

main()
