print("framecast")
