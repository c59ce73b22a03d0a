from pusher.service import main

main()
