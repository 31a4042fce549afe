import Foundation
import Postgres
